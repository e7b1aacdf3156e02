//! Placement constraints the Kubernetes scheduler enforces beyond resources and node labels,
//! as the planner models them: inter-pod affinity and anti-affinity, topology spread
//! constraints, and the zones of bound persistent volumes.
//!
//! Only the two topologies a plan decides are modelled: the node (`kubernetes.io/hostname`)
//! and the zone (`topology.kubernetes.io/zone`). Terms over other keys are dropped when parsed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const ZONE: &str = "topology.kubernetes.io/zone";
const ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
/// The EBS CSI driver's own zone key on the volumes it provisions.
const ZONE_EBS_CSI: &str = "topology.ebs.csi.aws.com/zone";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    Hostname,
    Zone,
}

impl Topology {
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            HOSTNAME => Some(Self::Hostname),
            ZONE | ZONE_BETA => Some(Self::Zone),
            _ => None,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::Hostname => HOSTNAME,
            Self::Zone => ZONE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A Kubernetes label selector. An empty selector matches every pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// `app=web,tier in (a,b)`, for reasons people read.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.extend(self.match_expressions.iter().map(|e| match e.operator {
            SelectorOperator::In => format!("{} in ({})", e.key, e.values.join(",")),
            SelectorOperator::NotIn => format!("{} notin ({})", e.key, e.values.join(",")),
            SelectorOperator::Exists => e.key.clone(),
            SelectorOperator::DoesNotExist => format!("!{}", e.key),
        }));
        if parts.is_empty() {
            "every pod".into()
        } else {
            parts.join(",")
        }
    }

    /// From a Kubernetes `labelSelector` object; `None` when it is absent or malformed (a term
    /// without a selector selects nothing, so it constrains nothing).
    pub fn parse(value: &Value) -> Option<Self> {
        let object = value.as_object()?;
        let match_labels = object
            .get("matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let mut match_expressions = Vec::new();
        for e in object
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let operator = match e["operator"].as_str()? {
                "In" => SelectorOperator::In,
                "NotIn" => SelectorOperator::NotIn,
                "Exists" => SelectorOperator::Exists,
                "DoesNotExist" => SelectorOperator::DoesNotExist,
                _ => return None,
            };
            match_expressions.push(SelectorRequirement {
                key: e["key"].as_str()?.to_owned(),
                operator,
                values: e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            });
        }
        Some(Self {
            match_labels,
            match_expressions,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityKind {
    /// Run in the same topology domain as a matching pod.
    Affinity,
    /// Never share the topology domain with a matching pod.
    AntiAffinity,
}

/// One `podAffinity` or `podAntiAffinity` term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodAffinityTerm {
    pub kind: AffinityKind,
    pub topology: Topology,
    pub selector: LabelSelector,
    /// Namespaces the selector looks in; empty means the pod's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Absent for a required term; a preferred term's weight (1-100) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl PodAffinityTerm {
    pub fn required(&self) -> bool {
        self.weight.is_none()
    }

    pub fn describe(&self) -> String {
        let kind = match self.kind {
            AffinityKind::Affinity => "podAffinity",
            AffinityKind::AntiAffinity => "podAntiAffinity",
        };
        format!(
            "{kind} on {} ({})",
            self.topology.key(),
            self.selector.describe()
        )
    }
}

/// One `topologySpreadConstraints` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpreadConstraint {
    pub max_skew: u32,
    pub topology: Topology,
    pub selector: LabelSelector,
    /// `whenUnsatisfiable: DoNotSchedule`; `ScheduleAnyway` constraints only break ties.
    #[serde(default = "yes")]
    pub hard: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_domains: Option<u32>,
}

fn yes() -> bool {
    true
}

impl SpreadConstraint {
    pub fn describe(&self) -> String {
        let mut text = format!(
            "topologySpreadConstraint maxSkew {} on {} ({})",
            self.max_skew,
            self.topology.key(),
            self.selector.describe()
        );
        if let Some(min) = self.min_domains {
            text.push_str(&format!(", minDomains {min}"));
        }
        text
    }
}

/// A bound persistent volume whose node affinity limits it to some zones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ZonalVolume {
    /// The claim, as the pod names it.
    pub claim: String,
    pub zones: Vec<String>,
}

/// The zones a persistent volume's `spec.nodeAffinity` admits, if it names any.
pub fn volume_zones(pv: &Value) -> Vec<String> {
    let mut zones: Vec<String> = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|term| term["matchExpressions"].as_array().into_iter().flatten())
        .filter(|e| {
            e["operator"].as_str() == Some("In")
                && matches!(e["key"].as_str(), Some(ZONE | ZONE_BETA | ZONE_EBS_CSI))
        })
        .flat_map(|e| e["values"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    zones.sort();
    zones.dedup();
    zones
}

/// The pod affinity and anti-affinity terms of a pod's `spec.affinity` over modelled
/// topologies.
pub fn affinity_terms(affinity: &Value) -> Vec<PodAffinityTerm> {
    let mut terms = Vec::new();
    for (field, kind) in [
        ("podAffinity", AffinityKind::Affinity),
        ("podAntiAffinity", AffinityKind::AntiAffinity),
    ] {
        let section = &affinity[field];
        let required = section["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| (t, None));
        let preferred = section["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let weight = u32::try_from(p["weight"].as_u64()?).ok()?;
                Some((&p["podAffinityTerm"], Some(weight)))
            });
        for (term, weight) in required.chain(preferred) {
            let (Some(topology), Some(selector)) = (
                term["topologyKey"].as_str().and_then(Topology::from_key),
                LabelSelector::parse(&term["labelSelector"]),
            ) else {
                continue;
            };
            terms.push(PodAffinityTerm {
                kind,
                topology,
                selector,
                namespaces: term["namespaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect(),
                weight,
            });
        }
    }
    terms
}

/// A pod's `spec.topologySpreadConstraints` over modelled topologies.
pub fn spread_constraints(constraints: &Value) -> Vec<SpreadConstraint> {
    constraints
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(SpreadConstraint {
                max_skew: u32::try_from(c["maxSkew"].as_u64()?).ok()?.max(1),
                topology: Topology::from_key(c["topologyKey"].as_str()?)?,
                selector: LabelSelector::parse(&c["labelSelector"])?,
                hard: c["whenUnsatisfiable"].as_str() != Some("ScheduleAnyway"),
                min_domains: c["minDomains"].as_u64().and_then(|m| u32::try_from(m).ok()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let selector = LabelSelector::parse(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "a"), ("canary", "")])));
        assert!(!selector.matches(&labels(&[("tier", "a")])));
        assert_eq!(selector.describe(), "app=web,tier in (a,b),!canary");
        assert!(LabelSelector::default().matches(&BTreeMap::new()));
        assert_eq!(
            LabelSelector::parse(&json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]})),
            None
        );
    }

    #[test]
    fn affinity_terms_keep_modelled_topologies_with_their_weights() {
        let terms = affinity_terms(&json!({
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"},
                    {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/region"}
                ],
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}},
                     "topologyKey": "topology.kubernetes.io/zone", "namespaces": ["data"]}}
                ]
            },
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "failure-domain.beta.kubernetes.io/zone"},
                    {"topologyKey": "kubernetes.io/hostname"}
                ]
            }
        }));
        assert_eq!(terms.len(), 3, "{terms:?}");
        assert_eq!(terms[0].kind, AffinityKind::Affinity);
        assert_eq!(terms[0].topology, Topology::Zone);
        assert!(terms[0].required());
        assert_eq!(
            terms[1].describe(),
            "podAntiAffinity on kubernetes.io/hostname (app=db)"
        );
        assert_eq!(terms[2].weight, Some(50));
        assert_eq!(terms[2].namespaces, ["data"]);
    }

    #[test]
    fn spread_constraints_and_volume_zones_parse() {
        let spread = spread_constraints(&json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
             "minDomains": 3, "labelSelector": {"matchLabels": {"app": "web"}}},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "web"}}},
            {"maxSkew": 1, "topologyKey": "node.kubernetes.io/instance-type", "labelSelector": {}}
        ]));
        assert_eq!(spread.len(), 2);
        assert!(spread[0].hard && !spread[1].hard);
        assert_eq!(spread[0].min_domains, Some(3));
        assert_eq!(
            spread[0].describe(),
            "topologySpreadConstraint maxSkew 1 on topology.kubernetes.io/zone (app=web), minDomains 3"
        );
        let pv = json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": ["us-east-1b"]}]}
        ]}}}});
        assert_eq!(volume_zones(&pv), ["us-east-1b"]);
        assert!(volume_zones(&json!({"spec": {}})).is_empty());
    }
}
