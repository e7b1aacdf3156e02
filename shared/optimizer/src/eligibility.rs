//! Which pods may run on spot capacity.
//!
//! In order: an explicit `spotwise.io/spot` annotation ("false" opts out, "true" opts in past
//! the defaults below); excluded namespaces and labels; controller kinds kept on on-demand
//! (StatefulSets and bare pods by default: their state or their existence does not survive a
//! reclaim well); PodDisruptionBudgets that allow no voluntary disruption. Then each workload
//! keeps an on-demand base: the larger of a count and a share of its replicas.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
pub use spotwise_core::snapshot::{Owner, Pdb, WorkloadPod};

pub const SPOT_ANNOTATION: &str = "spotwise.io/spot";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpotPolicy {
    pub excluded_namespaces: Vec<String>,
    /// A pod carrying any of these labels stays on on-demand.
    pub excluded_labels: BTreeMap<String, String>,
    /// Controller kinds kept on on-demand; `Pod` means pods without a controller.
    pub on_demand_kinds: Vec<String>,
    pub on_demand_base_count: u32,
    pub on_demand_base_pct: u8,
}

impl Default for SpotPolicy {
    fn default() -> Self {
        Self {
            excluded_namespaces: vec!["kube-system".into()],
            excluded_labels: BTreeMap::new(),
            on_demand_kinds: vec!["StatefulSet".into(), "Pod".into()],
            on_demand_base_count: 0,
            on_demand_base_pct: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub spot_ok: bool,
    pub reason: String,
}

fn decision(spot_ok: bool, reason: impl Into<String>) -> Decision {
    Decision {
        spot_ok,
        reason: reason.into(),
    }
}

pub fn decide(pods: &[WorkloadPod], pdbs: &[Pdb], policy: &SpotPolicy) -> Vec<Decision> {
    let selected: Vec<usize> = pdbs
        .iter()
        .map(|pdb| pods.iter().filter(|p| pdb.selects(p)).count())
        .collect();
    let mut decisions: Vec<Decision> = pods
        .iter()
        .map(|pod| {
            match pod.annotations.get(SPOT_ANNOTATION).map(String::as_str) {
                Some("false") => {
                    return decision(false, format!("annotation {SPOT_ANNOTATION}=false"));
                }
                Some("true") => {
                    return decision(true, format!("annotation {SPOT_ANNOTATION}=true"));
                }
                _ => {}
            }
            if policy.excluded_namespaces.contains(&pod.namespace) {
                return decision(
                    false,
                    format!("namespace {} is excluded from spot", pod.namespace),
                );
            }
            if let Some((k, v)) = policy
                .excluded_labels
                .iter()
                .find(|(k, v)| pod.labels.get(*k) == Some(*v))
            {
                return decision(false, format!("label {k}={v} is excluded from spot"));
            }
            let kind = pod.owner.as_ref().map_or("Pod", |o| o.kind.as_str());
            if policy.on_demand_kinds.iter().any(|k| k == kind) {
                let what = if kind == "Pod" {
                    "a pod without a controller".to_owned()
                } else {
                    format!("owned by a {kind}")
                };
                return decision(false, format!("{what}; policy keeps {kind} on on-demand"));
            }
            if let Some((pdb, _)) = pdbs
                .iter()
                .zip(&selected)
                .find(|(pdb, n)| pdb.selects(pod) && pdb.forbids_disruption(**n))
            {
                return decision(
                    false,
                    format!(
                        "PodDisruptionBudget {}/{} allows no voluntary disruption",
                        pdb.namespace, pdb.name
                    ),
                );
            }
            decision(true, "eligible for spot")
        })
        .collect();

    // The on-demand base, per workload, by pod name so the choice is stable between runs.
    let mut workloads: HashMap<(&str, &Owner), Vec<usize>> = HashMap::new();
    for (i, pod) in pods.iter().enumerate() {
        if let Some(owner) = &pod.owner
            && decisions[i].spot_ok
        {
            workloads
                .entry((pod.namespace.as_str(), owner))
                .or_default()
                .push(i);
        }
    }
    for ((_, owner), mut members) in workloads {
        let n = members.len();
        let base = (policy.on_demand_base_count as usize)
            .max((n * usize::from(policy.on_demand_base_pct)).div_ceil(100))
            .min(n);
        members.sort_by(|&a, &b| pods[a].name.cmp(&pods[b].name));
        for &i in members.iter().take(base) {
            decisions[i] = decision(
                false,
                format!(
                    "on-demand base of {base} of {n} replicas of {} {}",
                    owner.kind, owner.name
                ),
            );
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, owner: Option<(&str, &str)>) -> WorkloadPod {
        WorkloadPod {
            namespace: ns.into(),
            name: name.into(),
            labels: BTreeMap::from([("app".into(), name.split('-').next().unwrap_or(name).into())]),
            annotations: BTreeMap::new(),
            owner: owner.map(|(k, n)| Owner {
                kind: k.into(),
                name: n.into(),
            }),
        }
    }

    #[test]
    fn defaults_keep_system_stateful_and_bare_pods_on_demand() {
        let pods = [
            pod("web", "api-1", Some(("ReplicaSet", "api-7d9"))),
            pod(
                "kube-system",
                "coredns-1",
                Some(("ReplicaSet", "coredns-5f")),
            ),
            pod("db", "pg-0", Some(("StatefulSet", "pg"))),
            pod("web", "debug", None),
        ];
        let d = decide(&pods, &[], &SpotPolicy::default());
        assert_eq!(
            d.iter().map(|d| d.spot_ok).collect::<Vec<_>>(),
            [true, false, false, false]
        );
        assert!(d[1].reason.contains("kube-system"));
        assert!(d[2].reason.contains("StatefulSet"));
        assert!(d[3].reason.contains("without a controller"));
    }

    #[test]
    fn annotation_overrides_defaults_both_ways() {
        let mut opt_in = pod("db", "pg-0", Some(("StatefulSet", "pg")));
        opt_in
            .annotations
            .insert(SPOT_ANNOTATION.into(), "true".into());
        let mut opt_out = pod("web", "api-1", Some(("ReplicaSet", "api-7d9")));
        opt_out
            .annotations
            .insert(SPOT_ANNOTATION.into(), "false".into());
        let d = decide(&[opt_in, opt_out], &[], &SpotPolicy::default());
        assert!(d[0].spot_ok);
        assert!(!d[1].spot_ok);
    }

    #[test]
    fn pdb_that_allows_no_disruption_keeps_pods_on_demand() {
        let pods = [
            pod("web", "api-1", Some(("ReplicaSet", "api-7d9"))),
            pod("web", "api-2", Some(("ReplicaSet", "api-7d9"))),
            pod("web", "batch-1", Some(("Job", "batch"))),
        ];
        let pdb = |min: Option<&str>, max: Option<&str>| Pdb {
            namespace: "web".into(),
            name: "api".into(),
            match_labels: BTreeMap::from([("app".into(), "api".into())]),
            min_available: min.map(Into::into),
            max_unavailable: max.map(Into::into),
        };
        let policy = SpotPolicy::default();
        for strict in [
            pdb(Some("2"), None),
            pdb(Some("100%"), None),
            pdb(None, Some("0")),
        ] {
            let d = decide(&pods, &[strict], &policy);
            assert_eq!(
                d.iter().map(|d| d.spot_ok).collect::<Vec<_>>(),
                [false, false, true]
            );
        }
        let lenient = decide(&pods, &[pdb(Some("1"), None)], &policy);
        assert!(lenient.iter().all(|d| d.spot_ok));
    }

    #[test]
    fn on_demand_base_is_the_larger_of_count_and_share() {
        let pods: Vec<WorkloadPod> = (1..=10)
            .map(|i| {
                pod(
                    "web",
                    &format!("api-{i:02}"),
                    Some(("ReplicaSet", "api-7d9")),
                )
            })
            .collect();
        let count = |policy: &SpotPolicy| {
            decide(&pods, &[], policy)
                .iter()
                .filter(|d| !d.spot_ok)
                .count()
        };
        let mut policy = SpotPolicy {
            on_demand_base_count: 2,
            ..SpotPolicy::default()
        };
        assert_eq!(count(&policy), 2);
        policy.on_demand_base_pct = 25;
        assert_eq!(count(&policy), 3);
        let d = decide(&pods, &[], &policy);
        assert!(
            !d[0].spot_ok && !d[2].spot_ok && d[3].spot_ok,
            "lowest names form the base"
        );
    }
}
