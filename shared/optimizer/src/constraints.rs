//! Inter-pod affinity, anti-affinity and topology spread resolved against a plan's pods, and
//! checked wherever a pod is placed or moved.
//!
//! Each term's selector, in the namespaces it looks at, names a group of pods. On a node, a
//! required anti-affinity term allows no other member of its group (and members of the group
//! may not join a node whose pods forbid them), a hard spread constraint over hostnames allows
//! at most `maxSkew` members: a plan always has nodes without any, so the lowest count is zero.
//! A required affinity term needs a member already on the node (or, for the first pod of a
//! group that selects itself, nothing anywhere). Zones are decided before packing: every pod a
//! zone rule concerns gets a zone that satisfies it, kept as a zone selector.

use std::collections::{BTreeMap, HashMap};

use spotwise_core::placement::{AffinityKind, LabelSelector, Topology};

use crate::model::PlanInput;

pub type GroupId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Affinity,
    AntiAffinity,
    Spread {
        max_skew: u32,
        min_domains: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub group: GroupId,
    pub kind: RuleKind,
    pub topology: Topology,
    /// `None` for a rule the scheduler enforces; a preference's weight otherwise.
    pub weight: Option<u32>,
    /// The term as the pod spells it, for reasons.
    pub text: String,
}

impl Rule {
    fn hard(&self) -> bool {
        self.weight.is_none()
    }
}

#[derive(Debug, Clone, Default)]
struct PodRules {
    /// Groups the pod counts in (only groups some rule refers to).
    member_of: Vec<GroupId>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pods: Vec<PodRules>,
    members: Vec<Vec<usize>>,
}

/// What a node holds, as far as hostname rules are concerned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    counts: Vec<(GroupId, u32)>,
    /// The tightest per-node cap its pods' rules put on each group, and the pod whose rule it is.
    caps: Vec<(GroupId, u32, usize)>,
}

impl NodeState {
    /// Members of `group` on the node.
    pub fn count(&self, group: GroupId) -> u32 {
        self.counts
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0, |(_, c)| *c)
    }
}

/// Per zone, how many members of each group run there, and which groups a pod there keeps out.
#[derive(Debug, Clone, Default)]
pub struct ZoneState {
    counts: Vec<BTreeMap<String, u32>>,
    excluded: Vec<BTreeMap<String, u32>>,
}

impl ZoneState {
    fn count(&self, group: GroupId, zone: &str) -> u32 {
        self.counts
            .get(group)
            .and_then(|z| z.get(zone))
            .copied()
            .unwrap_or(0)
    }

    fn total(&self, group: GroupId) -> u32 {
        self.counts.get(group).map_or(0, |z| z.values().sum())
    }
}

pub fn namespace_of(pod_name: &str) -> &str {
    pod_name.split_once('/').map_or("default", |(ns, _)| ns)
}

impl Constraints {
    pub fn new(input: &PlanInput) -> Self {
        let pods = &input.pods;
        let mut constraints = Constraints {
            pods: vec![PodRules::default(); pods.len()],
            members: Vec::new(),
        };
        let mut groups: HashMap<(LabelSelector, Vec<String>), GroupId> = HashMap::new();
        let mut keys: Vec<(LabelSelector, Vec<String>)> = Vec::new();
        for (index, pod) in pods.iter().enumerate() {
            if pod.affinity.is_empty() && pod.spread.is_empty() {
                continue;
            }
            let own = namespace_of(&pod.name).to_owned();
            let mut group_of = |selector: &LabelSelector, namespaces: &[String]| {
                let mut namespaces = if namespaces.is_empty() {
                    vec![own.clone()]
                } else {
                    namespaces.to_vec()
                };
                namespaces.sort();
                namespaces.dedup();
                let key = (selector.clone(), namespaces);
                *groups.entry(key.clone()).or_insert_with(|| {
                    keys.push(key);
                    keys.len() - 1
                })
            };
            let mut rules = Vec::new();
            for term in &pod.affinity {
                rules.push(Rule {
                    group: group_of(&term.selector, &term.namespaces),
                    kind: match term.kind {
                        AffinityKind::Affinity => RuleKind::Affinity,
                        AffinityKind::AntiAffinity => RuleKind::AntiAffinity,
                    },
                    topology: term.topology,
                    weight: term.weight,
                    text: term.describe(),
                });
            }
            for spread in &pod.spread {
                rules.push(Rule {
                    group: group_of(&spread.selector, &[]),
                    kind: RuleKind::Spread {
                        max_skew: spread.max_skew.max(1),
                        min_domains: spread.min_domains,
                    },
                    topology: spread.topology,
                    weight: (!spread.hard).then_some(1),
                    text: spread.describe(),
                });
            }
            constraints.pods[index].rules = rules;
        }
        if keys.is_empty() {
            return constraints;
        }
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, pod) in pods.iter().enumerate() {
            by_namespace
                .entry(namespace_of(&pod.name))
                .or_default()
                .push(index);
        }
        constraints.members = keys
            .iter()
            .enumerate()
            .map(|(group, (selector, namespaces))| {
                let mut members: Vec<usize> = namespaces
                    .iter()
                    .flat_map(|ns| by_namespace.get(ns.as_str()).into_iter().flatten())
                    .copied()
                    .filter(|&p| selector.matches(&pods[p].labels))
                    .collect();
                members.sort_unstable();
                for &p in &members {
                    constraints.pods[p].member_of.push(group);
                }
                members
            })
            .collect();
        constraints
    }

    /// Whether any pod has a rule at all: without one, every check below is a no-op.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn is_member(&self, pod: usize, group: GroupId) -> bool {
        self.pods[pod].member_of.contains(&group)
    }

    fn rules(&self, pod: usize, topology: Topology) -> impl Iterator<Item = &Rule> {
        self.pods[pod]
            .rules
            .iter()
            .filter(move |r| r.topology == topology)
    }

    /// Whether the pod needs a member of some group already on its node: such pods are placed
    /// after the others.
    pub fn needs_company(&self, pod: usize) -> bool {
        self.rules(pod, Topology::Hostname)
            .any(|r| r.hard() && r.kind == RuleKind::Affinity)
    }

    pub fn has_preferences(&self, pod: usize) -> bool {
        self.pods[pod].rules.iter().any(|r| !r.hard())
    }

    pub fn has_zone_rules(&self, pod: usize) -> bool {
        self.rules(pod, Topology::Zone).next().is_some()
    }

    /// The first rule, the pod's or one its node's pods hold, that forbids the pod on a node in
    /// `state`. Hostname affinity is checked by [`Constraints::company_missing`].
    pub fn host_refusal(&self, pod: usize, state: &NodeState) -> Option<&Rule> {
        let rules = self.pods.get(pod)?;
        if rules.member_of.is_empty() && rules.rules.is_empty() {
            return None;
        }
        for rule in self.rules(pod, Topology::Hostname).filter(|r| r.hard()) {
            let own = u32::from(self.is_member(pod, rule.group));
            let count = state.count(rule.group);
            let refused = match rule.kind {
                RuleKind::AntiAffinity => count > 0,
                RuleKind::Spread { max_skew, .. } => count + own > max_skew,
                RuleKind::Affinity => false,
            };
            if refused {
                return Some(rule);
            }
        }
        state
            .caps
            .iter()
            .find(|&&(group, cap, _)| self.is_member(pod, group) && state.count(group) + 1 > cap)
            .and_then(|&(group, _, holder)| {
                self.rules(holder, Topology::Hostname)
                    .find(|r| r.group == group && r.hard())
            })
    }

    /// The hostname affinity rule the pod cannot meet on a node in `state`, if any. A pod whose
    /// group has no member placed yet (`placed` counts them) and that belongs to it may start it.
    pub fn company_missing(
        &self,
        pod: usize,
        state: &NodeState,
        placed: impl Fn(GroupId) -> u32,
    ) -> Option<&Rule> {
        self.rules(pod, Topology::Hostname)
            .filter(|r| r.hard() && r.kind == RuleKind::Affinity)
            .find(|r| {
                state.count(r.group) == 0 && !(self.is_member(pod, r.group) && placed(r.group) == 0)
            })
    }

    pub fn host_add(&self, pod: usize, state: &mut NodeState) {
        let Some(rules) = self.pods.get(pod) else {
            return;
        };
        for &group in &rules.member_of {
            match state.counts.iter_mut().find(|(g, _)| *g == group) {
                Some((_, count)) => *count += 1,
                None => state.counts.push((group, 1)),
            }
        }
        for rule in self.rules(pod, Topology::Hostname).filter(|r| r.hard()) {
            let own = u32::from(self.is_member(pod, rule.group));
            let cap = match rule.kind {
                // Other members may not join; the pod itself counts once if it is one.
                RuleKind::AntiAffinity => own,
                RuleKind::Spread { max_skew, .. } => max_skew,
                RuleKind::Affinity => continue,
            };
            match state.caps.iter_mut().find(|(g, _, _)| *g == rule.group) {
                Some(slot) if cap < slot.1 => *slot = (rule.group, cap, pod),
                Some(_) => {}
                None => state.caps.push((rule.group, cap, pod)),
            }
        }
    }

    /// How many preferred hostname and zone terms (by weight) a node in `state`, in `zone`,
    /// satisfies for the pod.
    pub fn preference(&self, pod: usize, state: &NodeState, zone: &str, zones: &ZoneState) -> u32 {
        self.pods[pod]
            .rules
            .iter()
            .filter_map(|r| {
                let weight = r.weight?;
                let count = match r.topology {
                    Topology::Hostname => state.count(r.group),
                    Topology::Zone => zones.count(r.group, zone),
                };
                let met = match r.kind {
                    RuleKind::Affinity => count > 0,
                    RuleKind::AntiAffinity => count == 0,
                    RuleKind::Spread { .. } => false,
                };
                met.then_some(weight)
            })
            .sum()
    }

    pub fn zone_state(&self) -> ZoneState {
        ZoneState {
            counts: vec![BTreeMap::new(); self.members.len()],
            excluded: vec![BTreeMap::new(); self.members.len()],
        }
    }

    pub fn zone_add(&self, pod: usize, zone: &str, state: &mut ZoneState) {
        self.zone_shift(pod, zone, state, 1);
    }

    pub fn zone_remove(&self, pod: usize, zone: &str, state: &mut ZoneState) {
        self.zone_shift(pod, zone, state, -1);
    }

    fn zone_shift(&self, pod: usize, zone: &str, state: &mut ZoneState, by: i32) {
        let shift = |map: &mut BTreeMap<String, u32>| {
            let slot = map.entry(zone.to_owned()).or_default();
            *slot = slot.saturating_add_signed(by);
        };
        for &group in &self.pods[pod].member_of {
            shift(&mut state.counts[group]);
        }
        for rule in self.rules(pod, Topology::Zone) {
            if rule.hard() && rule.kind == RuleKind::AntiAffinity {
                shift(&mut state.excluded[rule.group]);
            }
        }
    }

    /// The first rule that forbids the pod in `zone`, given where the others are (`state`, the
    /// pod itself not counted) and the zones it could run in (`domains`).
    pub fn zone_refusal(
        &self,
        pod: usize,
        zone: &str,
        state: &ZoneState,
        domains: &[&str],
    ) -> Option<&Rule> {
        for rule in self.rules(pod, Topology::Zone).filter(|r| r.hard()) {
            let count = state.count(rule.group, zone);
            let own = u32::from(self.is_member(pod, rule.group));
            let refused = match rule.kind {
                RuleKind::AntiAffinity => count > 0,
                RuleKind::Affinity => count == 0 && !(own == 1 && state.total(rule.group) == 0),
                RuleKind::Spread {
                    max_skew,
                    min_domains,
                } => {
                    let lowest = if min_domains.is_some_and(|m| (domains.len() as u32) < m) {
                        0
                    } else {
                        domains
                            .iter()
                            .map(|d| state.count(rule.group, d))
                            .min()
                            .unwrap_or(0)
                    };
                    count + own > lowest + max_skew
                }
            };
            if refused {
                return Some(rule);
            }
        }
        let kept_out = self.pods[pod].member_of.iter().find(|&&group| {
            state
                .excluded
                .get(group)
                .and_then(|z| z.get(zone))
                .is_some_and(|&n| n > 0)
        });
        kept_out.and_then(|&group| {
            self.pods.iter().flat_map(|p| p.rules.iter()).find(|r| {
                r.group == group
                    && r.topology == Topology::Zone
                    && r.kind == RuleKind::AntiAffinity
                    && r.hard()
            })
        })
    }

    /// How evenly the pod's spread and anti-affinity groups sit if it goes to `zone`: lower
    /// is better, for choosing among zones every rule allows.
    pub fn zone_crowding(&self, pod: usize, zone: &str, state: &ZoneState) -> u32 {
        self.rules(pod, Topology::Zone)
            .filter(|r| matches!(r.kind, RuleKind::Spread { .. } | RuleKind::AntiAffinity))
            .map(|r| state.count(r.group, zone))
            .sum()
    }

    /// Pods the zone pass must place: those with zone rules and the members of the groups those
    /// rules count.
    pub fn zone_pods(&self) -> Vec<usize> {
        let mut groups = vec![false; self.members.len()];
        let mut pods: Vec<usize> = Vec::new();
        for (p, rules) in self.pods.iter().enumerate() {
            for r in rules.rules.iter().filter(|r| r.topology == Topology::Zone) {
                groups[r.group] = true;
                pods.push(p);
            }
        }
        for (group, members) in self.members.iter().enumerate() {
            if groups[group] {
                pods.extend(members);
            }
        }
        pods.sort_unstable();
        pods.dedup();
        pods
    }
}
