//! Which current nodes to drain, in what order, without leaving a pod unschedulable.
//!
//! A node is removed only when a simulation places every pod on it onto the nodes that stay,
//! counting the pods earlier removals already moved there, and every move keeps the pod's
//! affinity, anti-affinity, topology spread and volume zones (a drain that would break one is
//! listed as blocked, with the rule). A node that stays but whose pods
//! fit a cheaper offering is proposed for replacement. Steps are grouped into waves no larger
//! than the disruption budget.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::constraints::{Constraints, NodeState};
use crate::model::{CPU, DIMENSIONS, MEM, Offering, PlanInput, PodSpec, Vector, add, fits};
use crate::packing::{admits, runs_on};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Drain the node; its pods move to the nodes listed.
    Remove {
        node: String,
        saving_hr: f64,
        /// (pod, node it lands on in the simulation)
        moves: Vec<(String, String)>,
        reason: String,
    },
    /// Launch `with` and then drain the node (needs capacity provisioning, so never automatic).
    Replace {
        node: String,
        with: String,
        zone: String,
        capacity_type: String,
        saving_hr: f64,
        reason: String,
    },
}

impl Step {
    pub fn node(&self) -> &str {
        match self {
            Step::Remove { node, .. } | Step::Replace { node, .. } => node,
        }
    }

    pub fn saving_hr(&self) -> f64 {
        match self {
            Step::Remove { saving_hr, .. } | Step::Replace { saving_hr, .. } => *saving_hr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consolidation {
    pub current_cost_hr: f64,
    pub after_cost_hr: f64,
    /// Most nodes disrupted at once.
    pub budget: usize,
    /// Step indices grouped into waves; a wave starts when the previous one has finished.
    pub waves: Vec<Vec<usize>>,
    pub steps: Vec<Step>,
    pub blocked: Vec<Blocked>,
}

pub fn plan(input: &PlanInput) -> Consolidation {
    let policy = &input.policy;
    let nodes = &input.current_nodes;
    let as_offerings: Vec<Offering> = nodes
        .iter()
        .map(|n| {
            let mut o = Offering::from(n);
            o.price_hr = n.price_hr.or_else(|| price_of(input, &o)).unwrap_or(0.0);
            o
        })
        .collect();
    let capacity: Vec<Vector> = as_offerings.iter().map(|o| policy.usable(o)).collect();
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut used = vec![[0u64; DIMENSIONS]; nodes.len()];
    let mut pods_on: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let rules = Constraints::new(input);
    let mut hosts = vec![NodeState::default(); nodes.len()];
    let mut zones = rules.zone_state();
    for (p, pod) in input.pods.iter().enumerate() {
        if let Some(&n) = pod.node.as_deref().and_then(|name| index.get(name)) {
            add(&mut used[n], &pod.demand());
            pods_on[n].push(p);
            rules.host_add(p, &mut hosts[n]);
            rules.zone_add(p, &nodes[n].zone, &mut zones);
        }
    }
    let current_cost_hr: f64 = as_offerings.iter().map(|o| o.price_hr).sum();
    let share = |n: usize| -> f64 {
        (0..DIMENSIONS)
            .filter(|&r| capacity[n][r] > 0)
            .map(|r| used[n][r] as f64 / capacity[n][r] as f64)
            .fold(0.0, f64::max)
    };
    // Emptiest and dearest first: the most saving for the fewest evictions.
    let mut candidates: Vec<usize> = (0..nodes.len())
        .filter(|&n| !nodes[n].unschedulable)
        .collect();
    candidates.sort_by(|&a, &b| {
        share(a).total_cmp(&share(b)).then(
            as_offerings[b]
                .price_hr
                .total_cmp(&as_offerings[a].price_hr),
        )
    });

    let mut removed = vec![false; nodes.len()];
    let mut steps = Vec::new();
    let mut blocked = Vec::new();
    for &candidate in &candidates {
        if let Some(&pinned) = pods_on[candidate].iter().find(|&&p| input.pods[p].pinned) {
            let pod = &input.pods[pinned];
            let reason = match &pod.pinned_by {
                Some(annotation) => format!("runs {}, annotated {annotation}", pod.name),
                None => format!("runs {}, which no controller would recreate", pod.name),
            };
            blocked.push(Blocked {
                node: nodes[candidate].name.clone(),
                reason,
            });
            continue;
        }
        let mut trial = used.clone();
        let mut trial_hosts = hosts.clone();
        let mut trial_zones = zones.clone();
        let mut moves = Vec::new();
        let mut order = pods_on[candidate].clone();
        order.sort_by_key(|&p| std::cmp::Reverse((input.pods[p].cpu_m, input.pods[p].mem_mib)));
        let mut stuck = None;
        for p in order {
            let pod = &input.pods[p];
            let d = pod.demand();
            rules.zone_remove(p, &nodes[candidate].zone, &mut trial_zones);
            let stays = |n: usize| {
                n != candidate
                    && !removed[n]
                    && !nodes[n].unschedulable
                    && runs_on(input, pod, &as_offerings[n])
            };
            // Zones the pod could run in, for its spread constraints.
            let mut domains: Vec<&str> = Vec::new();
            if rules.has_zone_rules(p) {
                domains = (0..nodes.len())
                    .filter(|&n| stays(n))
                    .map(|n| nodes[n].zone.as_str())
                    .collect();
                domains.sort_unstable();
                domains.dedup();
            }
            let placed = |group| {
                (0..nodes.len())
                    .filter(|&n| n != candidate && !removed[n])
                    .map(|n| trial_hosts[n].count(group))
                    .sum::<u32>()
            };
            let mut refusal = None;
            let mut best: Option<(u32, usize)> = None;
            for n in (0..nodes.len()).filter(|&n| stays(n) && fits(&trial[n], &d, &capacity[n])) {
                let zone = nodes[n].zone.as_str();
                let refused = rules
                    .host_refusal(p, &trial_hosts[n])
                    .or_else(|| rules.company_missing(p, &trial_hosts[n], placed))
                    .or_else(|| rules.zone_refusal(p, zone, &trial_zones, &domains));
                if let Some(rule) = refused {
                    refusal.get_or_insert_with(|| rule.text.clone());
                    continue;
                }
                let score = rules.preference(p, &trial_hosts[n], zone, &trial_zones);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, n));
                }
                if !rules.has_preferences(p) {
                    break;
                }
            }
            if best.is_none() && refusal.is_none() && !pod.volumes.is_empty() {
                let unbound = PodSpec {
                    volumes: Vec::new(),
                    ..pod.clone()
                };
                let elsewhere = (0..nodes.len()).any(|n| {
                    n != candidate
                        && !removed[n]
                        && !nodes[n].unschedulable
                        && runs_on(input, &unbound, &as_offerings[n])
                        && fits(&trial[n], &d, &capacity[n])
                });
                if let Some(v) = pod.volumes.first().filter(|_| elsewhere) {
                    refusal = Some(format!(
                        "the zone of its volume {} (only in {})",
                        v.claim,
                        v.zones.join(", ")
                    ));
                }
            }
            match best {
                Some((_, n)) => {
                    add(&mut trial[n], &d);
                    rules.host_add(p, &mut trial_hosts[n]);
                    rules.zone_add(p, &nodes[n].zone, &mut trial_zones);
                    moves.push((p, n));
                }
                None => {
                    stuck = Some((pod.name.clone(), refusal));
                    break;
                }
            }
        }
        if let Some((pod, Some(rule))) = &stuck {
            blocked.push(Blocked {
                node: nodes[candidate].name.clone(),
                reason: format!("moving {pod} would break {rule}"),
            });
        }
        if stuck.is_none() {
            for &(p, n) in &moves {
                pods_on[n].push(p);
            }
            used = trial;
            used[candidate] = [0; DIMENSIONS];
            hosts = trial_hosts;
            zones = trial_zones;
            removed[candidate] = true;
            let pods = pods_on[candidate].len();
            pods_on[candidate].clear();
            steps.push(Step::Remove {
                node: nodes[candidate].name.clone(),
                saving_hr: as_offerings[candidate].price_hr,
                moves: moves
                    .iter()
                    .map(|&(p, n)| (input.pods[p].name.clone(), nodes[n].name.clone()))
                    .collect(),
                reason: format!(
                    "its {pods} pods fit on the remaining nodes; saves {:.4}/h",
                    as_offerings[candidate].price_hr
                ),
            });
        }
    }

    let zone_pods = rules.zone_pods();
    for n in 0..nodes.len() {
        if removed[n] || nodes[n].unschedulable || pods_on[n].is_empty() {
            continue;
        }
        if pods_on[n].iter().any(|&p| input.pods[p].pinned) {
            continue;
        }
        // Zone rules count these pods where they run: a replacement keeps them in its zone.
        let zone_bound = pods_on[n]
            .iter()
            .any(|p| zone_pods.binary_search(p).is_ok());
        let cheaper = input
            .offerings
            .iter()
            .filter(|o| {
                o.price_hr < as_offerings[n].price_hr * 0.9
                    && (!zone_bound || o.zone == nodes[n].zone)
                    && pods_on[n].iter().all(|&p| admits(input, &input.pods[p], o))
                    && fits(&[0; DIMENSIONS], &used[n], &policy.usable(o))
            })
            .min_by(|a, b| a.price_hr.total_cmp(&b.price_hr));
        if let Some(o) = cheaper {
            let saving_hr = as_offerings[n].price_hr - o.price_hr;
            steps.push(Step::Replace {
                node: nodes[n].name.clone(),
                with: o.instance_type.clone(),
                zone: o.zone.clone(),
                capacity_type: o
                    .label("karpenter.sh/capacity-type")
                    .unwrap_or_default()
                    .to_owned(),
                saving_hr,
                reason: format!(
                    "its pods ({}m cpu, {} MiB) fit a {} {} at {:.4}/h instead of {:.4}/h",
                    used[n][CPU],
                    used[n][MEM],
                    o.instance_type,
                    o.zone,
                    o.price_hr,
                    as_offerings[n].price_hr
                ),
            });
        }
    }

    let budget = budget(input);
    let waves = (0..steps.len())
        .collect::<Vec<_>>()
        .chunks(budget)
        .map(<[usize]>::to_vec)
        .collect();
    let saved: f64 = steps.iter().map(Step::saving_hr).sum();
    Consolidation {
        current_cost_hr,
        after_cost_hr: current_cost_hr - saved,
        budget,
        waves,
        steps,
        blocked,
    }
}

/// The smaller of the count and the share of current nodes; at least one.
pub fn budget(input: &PlanInput) -> usize {
    let policy = &input.policy;
    let by_pct = (input.current_nodes.len() * usize::from(policy.max_disrupted_pct)).div_ceil(100);
    (policy.max_disrupted_nodes as usize).min(by_pct).max(1)
}

/// A current node's price from the offerings: same type, zone and capacity type, else the same
/// type and capacity type anywhere.
fn price_of(input: &PlanInput, node: &Offering) -> Option<f64> {
    let same = |o: &&Offering| {
        o.instance_type == node.instance_type && o.capacity_type == node.capacity_type
    };
    input
        .offerings
        .iter()
        .filter(same)
        .find(|o| o.zone == node.zone)
        .or_else(|| input.offerings.iter().find(same))
        .map(|o| o.price_hr)
}

#[cfg(test)]
mod tests {
    use spotwise_core::domain::CapacityType;

    use super::*;
    use crate::model::{CurrentNode, PlanPolicy, PodSpec};

    fn node(name: &str, itype: &str, cpu_m: u64, price: f64) -> CurrentNode {
        CurrentNode {
            name: name.into(),
            instance_id: None,
            instance_type: itype.into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::OnDemand,
            cpu_m,
            mem_mib: cpu_m * 4,
            max_pods: 29,
            gpus: 0,
            price_hr: Some(price),
            labels: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
            not_ready: false,
            do_not_disrupt: false,
        }
    }

    fn pod(name: &str, cpu_m: u64, on: &str) -> PodSpec {
        PodSpec {
            name: name.into(),
            cpu_m,
            mem_mib: cpu_m,
            spot_ok: false,
            node: Some(on.into()),
            ..PodSpec::default()
        }
    }

    fn input(pods: Vec<PodSpec>, nodes: Vec<CurrentNode>) -> PlanInput {
        PlanInput {
            pods,
            offerings: Vec::new(),
            policy: PlanPolicy {
                max_disrupted_nodes: 1,
                max_disrupted_pct: 100,
                ..PlanPolicy::default()
            },
            current_nodes: nodes,
            ..PlanInput::default()
        }
    }

    #[test]
    fn underused_nodes_are_removed_only_when_their_pods_fit_elsewhere() {
        let nodes = vec![
            node("big", "m5.xlarge", 4000, 0.192),
            node("a", "m5.large", 2000, 0.096),
            node("b", "m5.large", 2000, 0.096),
        ];
        let pods = vec![
            pod("ns/p1", 1500, "big"),
            pod("ns/p2", 500, "a"),
            pod("ns/p3", 1800, "b"),
        ];
        let c = plan(&input(pods, nodes));
        let removed: Vec<&str> = c
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Remove { .. }))
            .map(Step::node)
            .collect();
        // a's pod fits on big; then b's 1800m fits on big (1500 + 500 + 1800 <= 4000): both go.
        assert_eq!(removed, ["a", "b"]);
        assert!((c.after_cost_hr - 0.192).abs() < 1e-9);
        assert_eq!(
            c.waves,
            vec![vec![0], vec![1]],
            "budget of one node per wave"
        );
        let Step::Remove { moves, .. } = &c.steps[1] else {
            panic!()
        };
        assert_eq!(moves, &[("ns/p3".to_owned(), "big".to_owned())]);
    }

    #[test]
    fn nodes_with_bare_pods_or_no_room_elsewhere_stay() {
        let nodes = vec![
            node("a", "m5.large", 2000, 0.096),
            node("b", "m5.large", 2000, 0.096),
        ];
        let mut bare = pod("ns/debug", 100, "a");
        bare.pinned = true;
        let c = plan(&input(vec![bare, pod("ns/p", 1950, "b")], nodes));
        assert!(c.steps.is_empty(), "{:?}", c.steps);
        assert_eq!(c.blocked.len(), 1);
        assert!(c.blocked[0].reason.contains("ns/debug"));
    }

    /// Ignoring the annotation, a (the emptiest node) is drained onto b. Either annotation keeps
    /// a, with the annotation named; the plan may still empty b onto a instead.
    #[test]
    fn nodes_running_pods_that_ask_not_to_be_disrupted_stay() {
        let nodes = || {
            vec![
                node("a", "m5.large", 2000, 0.096),
                node("b", "m5.large", 2000, 0.096),
            ]
        };
        let free = plan(&input(
            vec![pod("ns/batch", 100, "a"), pod("ns/p", 1000, "b")],
            nodes(),
        ));
        assert_eq!(
            free.steps.iter().map(Step::node).collect::<Vec<_>>(),
            ["a"],
            "without it, a (the emptiest) is removed"
        );
        for annotation in [
            "karpenter.sh/do-not-disrupt=true",
            "cluster-autoscaler.kubernetes.io/safe-to-evict=false",
        ] {
            let mut kept = pod("ns/batch", 100, "a");
            kept.pinned = true;
            kept.pinned_by = Some(annotation.to_owned());
            let c = plan(&input(vec![kept, pod("ns/p", 1000, "b")], nodes()));
            assert!(
                c.steps.iter().all(|step| step.node() != "a"),
                "{annotation}: {:?}",
                c.steps
            );
            assert!(
                c.blocked.iter().any(
                    |b| b.node == "a" && b.reason.ends_with(&format!("annotated {annotation}"))
                ),
                "{:?}",
                c.blocked
            );
        }
    }
}
