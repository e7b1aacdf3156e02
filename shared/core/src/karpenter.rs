//! Karpenter's NodePools as the agent reports them and as Spotwise writes its own: the
//! `karpenter.sh/v1` fields the planner steers by (requirements, limits, weight, disruption),
//! read from and rendered to the Kubernetes objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{CapacityType, Taint};
use crate::snapshot::{int_or_string, str_map, taints};

/// The label a node carries of the NodePool that launched it.
pub const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";
/// Node and pod annotation with which Karpenter is told not to disrupt them.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The label, on a NodePool, that makes it Spotwise's: the agent changes no other.
pub const MANAGED_LABEL: &str = "spotwise.io/managed";
pub const NODEPOOL_API: &str = "karpenter.sh/v1";
pub const NODECLASS_API: &str = "karpenter.k8s.aws/v1";

/// Requirements of one NodePool (Kubernetes allows 100; Karpenter's webhook fewer).
pub const MAX_REQUIREMENTS: usize = 100;
/// Values of one requirement.
pub const MAX_REQUIREMENT_VALUES: usize = 500;
/// NodePools and EC2NodeClasses a snapshot may list.
pub const MAX_NODE_POOLS: usize = 1_000;

/// What the cluster's Karpenter is told: which nodes it may launch and how it may disrupt them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Karpenter {
    pub node_pools: Vec<NodePool>,
    /// Names of the EC2NodeClasses.
    pub node_classes: Vec<String>,
}

impl Karpenter {
    /// The customer's own NodePools (not Spotwise's).
    pub fn customer_pools(&self) -> impl Iterator<Item = &NodePool> {
        self.node_pools.iter().filter(|p| !p.managed)
    }

    pub fn pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.iter().find(|p| p.spec.name == name)
    }
}

/// A NodePool in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePool {
    #[serde(flatten)]
    pub spec: NodePoolSpec,
    /// Labelled `spotwise.io/managed=true`.
    #[serde(default)]
    pub managed: bool,
}

/// The parts of a NodePool Spotwise reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodePoolSpec {
    pub name: String,
    /// Karpenter tries NodePools of higher weight first (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default)]
    pub requirements: Vec<Requirement>,
    /// Resource name to quantity: the most capacity the pool's nodes may add up to.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
    /// Labels of the nodes it launches.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    pub node_class: NodeClassRef,
    #[serde(default)]
    pub disruption: Disruption,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Requirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl Requirement {
    pub fn is_in(key: &str, values: impl IntoIterator<Item = String>) -> Self {
        Requirement {
            key: key.to_owned(),
            operator: "In".into(),
            values: values.into_iter().collect(),
        }
    }

    /// Whether a node labelled `value` (or unlabelled) meets the requirement.
    pub fn admits(&self, value: Option<&str>) -> bool {
        let listed = value.is_some_and(|v| self.values.iter().any(|x| x == v));
        match self.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let bound = self.values.first().and_then(|b| b.parse::<i64>().ok());
                match (value.and_then(|v| v.parse::<i64>().ok()), bound) {
                    (Some(v), Some(b)) if self.operator == "Gt" => v > b,
                    (Some(v), Some(b)) => v < b,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeClassRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Disruption {
    /// `WhenEmpty` or `WhenEmptyOrUnderutilized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidation_policy: Option<String>,
    /// A duration (`30s`, `5m`) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidate_after: Option<String>,
    #[serde(default)]
    pub budgets: Vec<Budget>,
}

/// How many of the pool's nodes may be disrupted at once, always or in a cron window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budget {
    /// A count (`5`) or a share of the pool's nodes (`10%`).
    pub nodes: String,
    /// Cron (UTC) of when the budget starts to apply; with `duration`, how long it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The disruption reasons it limits; empty limits all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl Budget {
    /// Nodes it allows disrupted at once in a pool of `pool_nodes` (a share rounds up, as
    /// Karpenter rounds it); `None` when `nodes` is not a count or a share.
    pub fn allowed(&self, pool_nodes: u32) -> Option<u32> {
        let nodes = self.nodes.trim();
        match nodes.strip_suffix('%') {
            Some(percent) => {
                let percent: u64 = percent.trim().parse().ok()?;
                let allowed = (u64::from(pool_nodes) * percent.min(100)).div_ceil(100);
                u32::try_from(allowed).ok()
            }
            None => nodes.parse().ok(),
        }
    }
}

/// Go's duration text as Karpenter writes it (`90s`, `10m`, `1h30m`), in seconds.
pub fn duration_seconds(text: &str) -> Option<i64> {
    let mut total = 0_i64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.parse::<i64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && !text.trim().is_empty()).then_some(total)
}

/// A `karpenter.sh/v1` NodePool object as the API server returns it.
pub fn parse_node_pool(item: &Value) -> Result<NodePool, String> {
    let name = item["metadata"]["name"]
        .as_str()
        .ok_or("metadata.name missing")?
        .to_owned();
    let spec = &item["spec"];
    let template = &spec["template"];
    let requirements = template["spec"]["requirements"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if requirements.len() > MAX_REQUIREMENTS {
        return Err(format!(
            "{} requirements, more than {MAX_REQUIREMENTS}",
            requirements.len()
        ));
    }
    let requirements = requirements
        .iter()
        .map(|r| {
            let values: Vec<String> = r["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            if values.len() > MAX_REQUIREMENT_VALUES {
                return Err(format!(
                    "requirement {} lists {} values, more than {MAX_REQUIREMENT_VALUES}",
                    r["key"],
                    values.len()
                ));
            }
            Ok(Requirement {
                key: r["key"]
                    .as_str()
                    .ok_or("requirement without key")?
                    .to_owned(),
                operator: r["operator"].as_str().unwrap_or("In").to_owned(),
                values,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let taints = taints(&template["spec"]["taints"]);
    let class = &template["spec"]["nodeClassRef"];
    let disruption = &spec["disruption"];
    Ok(NodePool {
        spec: NodePoolSpec {
            name,
            weight: spec["weight"].as_u64().and_then(|w| u32::try_from(w).ok()),
            requirements,
            limits: spec["limits"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), int_or_string(v)?)))
                        .collect()
                })
                .unwrap_or_default(),
            labels: str_map(&template["metadata"]["labels"]),
            taints,
            node_class: NodeClassRef {
                group: class["group"].as_str().unwrap_or_default().to_owned(),
                kind: class["kind"].as_str().unwrap_or_default().to_owned(),
                name: class["name"].as_str().unwrap_or_default().to_owned(),
            },
            disruption: Disruption {
                consolidation_policy: disruption["consolidationPolicy"]
                    .as_str()
                    .map(str::to_owned),
                consolidate_after: disruption["consolidateAfter"].as_str().map(str::to_owned),
                budgets: disruption["budgets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| Budget {
                        nodes: int_or_string(&b["nodes"]).unwrap_or_else(|| "10%".into()),
                        schedule: b["schedule"].as_str().map(str::to_owned),
                        duration: b["duration"].as_str().map(str::to_owned),
                        reasons: b["reasons"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.as_str().map(str::to_owned))
                            .collect(),
                    })
                    .collect(),
            },
        },
        managed: item["metadata"]["labels"][MANAGED_LABEL] == "true",
    })
}

impl NodePoolSpec {
    /// The NodePool object, labelled as Spotwise's.
    pub fn manifest(&self) -> Value {
        let mut disruption = json!({});
        if let Some(policy) = &self.disruption.consolidation_policy {
            disruption["consolidationPolicy"] = json!(policy);
        }
        if let Some(after) = &self.disruption.consolidate_after {
            disruption["consolidateAfter"] = json!(after);
        }
        if !self.disruption.budgets.is_empty() {
            disruption["budgets"] = self
                .disruption
                .budgets
                .iter()
                .map(|b| {
                    let mut budget = json!({"nodes": b.nodes});
                    if let Some(schedule) = &b.schedule {
                        budget["schedule"] = json!(schedule);
                    }
                    if let Some(duration) = &b.duration {
                        budget["duration"] = json!(duration);
                    }
                    if !b.reasons.is_empty() {
                        budget["reasons"] = json!(b.reasons);
                    }
                    budget
                })
                .collect();
        }
        let mut spec = json!({
            "template": {
                "metadata": {"labels": self.labels},
                "spec": {
                    "requirements": self.requirements.iter().map(|r| json!({
                        "key": r.key, "operator": r.operator, "values": r.values,
                    })).collect::<Vec<_>>(),
                    "taints": self.taints.iter().map(|t| {
                        let mut taint = json!({"key": t.key, "effect": t.effect});
                        if let Some(value) = &t.value {
                            taint["value"] = json!(value);
                        }
                        taint
                    }).collect::<Vec<_>>(),
                    "nodeClassRef": {
                        "group": self.node_class.group,
                        "kind": self.node_class.kind,
                        "name": self.node_class.name,
                    },
                },
            },
            "limits": self.limits,
            "disruption": disruption,
        });
        if let Some(weight) = self.weight {
            spec["weight"] = json!(weight);
        }
        json!({
            "apiVersion": NODEPOOL_API,
            "kind": "NodePool",
            "metadata": {"name": self.name, "labels": {MANAGED_LABEL: "true"}},
            "spec": spec,
        })
    }
}

/// Label of the placeholder pods that hold a Spotwise NodePool's nodes: the pool's name.
pub const RESERVATION_LABEL: &str = "spotwise.io/reservation";
/// Nodes one reservation may hold.
pub const MAX_RESERVED_NODES: u32 = 1_000;
/// Placeholders of one reservation, and distinct sizes among them.
pub const MAX_PLACEHOLDERS: u32 = 20_000;
pub const MAX_PLACEHOLDER_SIZES: usize = 500;

/// The PriorityClass (negative, never preempting) of the placeholders of `capacity` nodes, as
/// the agent's manifest ships them. On-demand ones rank above spot ones: the scheduler preempts
/// the lowest first, so pods that may run on spot take the spot nodes' room and leave the
/// on-demand nodes' to the pods that need on-demand.
pub fn reservation_priority_class(capacity: CapacityType) -> &'static str {
    match capacity {
        CapacityType::Spot => "spotwise-reservation-spot",
        CapacityType::OnDemand => "spotwise-reservation-on-demand",
    }
}

/// The planned nodes of a Spotwise NodePool, held by placeholder pods. Karpenter launches nodes
/// only for Pending pods, so a rollout creates these before its drains: the planned nodes come
/// up first, as node groups of the planned size would. The placeholders have the sizes of the
/// pods planned onto the nodes, so each drained pod preempts (placeholders have negative
/// priority) the one that stands in for it, and the pods land as planned rather than as
/// Karpenter would pack them anew. Preempted placeholders are bare pods and are not recreated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeReservation {
    pub node_pool: String,
    pub capacity_type: CapacityType,
    pub nodes: u32,
    pub placeholders: Vec<Placeholder>,
}

/// `count` placeholders requesting `cpu_m` and `mem_mib` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placeholder {
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub count: u32,
}

impl NodeReservation {
    pub fn placeholders(&self) -> u32 {
        self.placeholders
            .iter()
            .fold(0, |sum, p| sum.saturating_add(p.count))
    }

    /// The size of the `index`th placeholder.
    fn size(&self, index: u32) -> Option<&Placeholder> {
        let mut first = 0_u32;
        self.placeholders.iter().find(|p| {
            first = first.saturating_add(p.count);
            index < first
        })
    }

    /// The name of the `index`th placeholder: fixed, so a repeated action finds the pods the
    /// first attempt made.
    pub fn pod_name(&self, index: u32) -> String {
        format!("{}-hold-{index}", self.node_pool)
    }

    /// Why the reservation cannot be sent, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes > MAX_RESERVED_NODES {
            return Err(format!(
                "a reservation holds at most {MAX_RESERVED_NODES} nodes, not {}",
                self.nodes
            ));
        }
        if self.placeholders.len() > MAX_PLACEHOLDER_SIZES || self.placeholders() > MAX_PLACEHOLDERS
        {
            return Err(format!(
                "a reservation has at most {MAX_PLACEHOLDERS} placeholders of {MAX_PLACEHOLDER_SIZES} sizes, not {} of {}",
                self.placeholders(),
                self.placeholders.len()
            ));
        }
        // The pod names must stay DNS subdomain names.
        let longest = self.pod_name(MAX_PLACEHOLDERS);
        if self.node_pool.is_empty() || longest.len() > 253 {
            return Err(format!("NodePool name {:?} is not usable", self.node_pool));
        }
        Ok(())
    }

    /// The `index`th placeholder pod, for the restricted Pod Security Standard of the agent's
    /// namespace: the pause image, no privileges, gone at once when preempted.
    pub fn pod(&self, index: u32) -> Value {
        let size = self.size(index).copied().unwrap_or(Placeholder {
            cpu_m: 0,
            mem_mib: 0,
            count: 0,
        });
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.pod_name(index),
                "labels": {RESERVATION_LABEL: self.node_pool, MANAGED_LABEL: "true"},
            },
            "spec": {
                "priorityClassName": reservation_priority_class(self.capacity_type),
                "nodeSelector": {NODEPOOL_LABEL: self.node_pool},
                "tolerations": [{"operator": "Exists"}],
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": false,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 65535,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "hold",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {
                        "cpu": format!("{}m", size.cpu_m),
                        "memory": format!("{}Mi", size.mem_mib),
                    }},
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer_pool() -> Value {
        json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": "default", "labels": {"team": "platform"}},
            "spec": {
                "weight": 10,
                "template": {
                    "metadata": {"labels": {"tier": "general"}},
                    "spec": {
                        "requirements": [
                            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                            {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["4"]}
                        ],
                        "taints": [{"key": "dedicated", "value": "general", "effect": "NoSchedule"}],
                        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}
                    }
                },
                "limits": {"cpu": 1000, "memory": "1000Gi"},
                "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "1m",
                    "budgets": [{"nodes": "10%"}, {"nodes": "0", "schedule": "0 9 * * mon-fri", "duration": "8h"}]}
            }
        })
    }

    #[test]
    fn a_node_pool_is_read_with_what_steers_it() {
        let pool = parse_node_pool(&customer_pool()).unwrap();
        assert!(!pool.managed);
        let spec = &pool.spec;
        assert_eq!((spec.name.as_str(), spec.weight), ("default", Some(10)));
        assert_eq!(spec.requirements.len(), 2);
        assert_eq!(spec.limits["cpu"], "1000");
        assert_eq!(spec.labels["tier"], "general");
        assert_eq!(spec.taints[0].key, "dedicated");
        assert_eq!(spec.node_class.name, "default");
        assert_eq!(spec.disruption.budgets.len(), 2);
        assert_eq!(spec.disruption.budgets[1].duration.as_deref(), Some("8h"));
    }

    #[test]
    fn what_spotwise_writes_reads_back_the_same_and_is_labelled_as_its_own() {
        let mut spec = parse_node_pool(&customer_pool()).unwrap().spec;
        spec.name = "spotwise-spot-0123456789".into();
        let manifest = spec.manifest();
        assert_eq!(manifest["metadata"]["labels"][MANAGED_LABEL], "true");
        let read = parse_node_pool(&manifest).unwrap();
        assert!(read.managed);
        assert_eq!(read.spec, spec);
    }

    #[test]
    fn requirements_admit_as_karpenter_matches_labels() {
        let is_in = Requirement::is_in("zone", ["a".to_owned(), "b".to_owned()]);
        assert!(is_in.admits(Some("a")) && !is_in.admits(Some("c")) && !is_in.admits(None));
        let gt = Requirement {
            key: "gen".into(),
            operator: "Gt".into(),
            values: vec!["4".into()],
        };
        assert!(gt.admits(Some("5")) && !gt.admits(Some("4")) && !gt.admits(None));
        let not_in = Requirement {
            operator: "NotIn".into(),
            ..is_in
        };
        assert!(not_in.admits(Some("c")) && not_in.admits(None));
    }

    #[test]
    fn budgets_allow_counts_and_shares_rounded_up() {
        let budget = |nodes: &str| Budget {
            nodes: nodes.into(),
            ..Budget::default()
        };
        assert_eq!(budget("10%").allowed(25), Some(3));
        assert_eq!(budget("10%").allowed(0), Some(0));
        assert_eq!(budget("3").allowed(25), Some(3));
        assert_eq!(budget("0").allowed(25), Some(0));
        assert_eq!(budget("many").allowed(25), None);
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(duration_seconds("8h"), Some(28_800));
        assert_eq!(duration_seconds("1h30m"), Some(5_400));
        assert_eq!(duration_seconds("90s"), Some(90));
        assert_eq!(duration_seconds("10"), None);
        assert_eq!(duration_seconds("1d"), None);
        assert_eq!(duration_seconds(""), None);
    }
}
