//! A cluster snapshot from `kubectl get nodes,pods,pdb,pvc,pv,hpa,podmetrics -A -o json` (a
//! `List`) as planner, cost-allocation and right-sizing input. Claims and volumes only resolve which zones a pod's
//! bound volumes can attach in.
//!
//! DaemonSet and mirror pods are not placed: they run on every node, so their largest per-node
//! total becomes the per-node overhead (they are kept apart for cost allocation). Finished pods
//! are ignored. Pod requests follow the scheduler: the sum over containers, or the largest init
//! container when that is larger, plus the pod overhead. `PodMetrics` items (metrics.k8s.io),
//! when present, give each pod's current usage.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Arch, CapacityType, Taint};
use crate::karpenter::{DO_NOT_DISRUPT, Karpenter, NODEPOOL_LABEL};
use crate::placement::{
    PodAffinityTerm, SpreadConstraint, ZonalVolume, affinity_terms, spread_constraints,
    volume_zones,
};
use crate::rightsizing::{ContainerResources, Hpa, UsageHour};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "snapshot must be a Kubernetes List with an `items` array (kubectl get nodes,pods,pdb -A -o json)"
    )]
    NotAList,
    #[error("item {index} ({kind} {name}): {reason}")]
    Item {
        index: usize,
        kind: String,
        name: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotPod {
    pub workload: WorkloadPod,
    /// `spot_ok` is decided later, by [`to_plan_input`].
    pub spec: PodSpec,
    /// Current usage summed over containers, from metrics.k8s.io.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<PodUsage>,
    /// Each container's requests, limits, usage and restarts, for right-sizing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<PodContainer>,
}

/// One of a pod's containers as right-sizing reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodContainer {
    #[serde(flatten)]
    pub resources: ContainerResources,
    /// Current usage, from metrics.k8s.io.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<PodUsage>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Its current or last termination was an OOM kill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodUsage {
    pub cpu_m: u64,
    pub mem_mib: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub nodes: Vec<CurrentNode>,
    pub pods: Vec<SnapshotPod>,
    /// DaemonSet and mirror pods: not planned (they are the overhead), but they cost money.
    #[serde(default)]
    pub daemon_pods: Vec<SnapshotPod>,
    pub pdbs: Vec<Pdb>,
    pub daemonset_overhead: Overhead,
    pub region: Option<String>,
    /// The cluster's NodePools and EC2NodeClasses; `None` when it does not serve Karpenter's
    /// APIs (or the agent predates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub karpenter: Option<Karpenter>,
    /// HorizontalPodAutoscalers: right-sizing leaves the resources they scale on alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hpas: Vec<Hpa>,
    /// The agent's last complete hours of per-container usage, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage_hours: Vec<UsageHour>,
}

impl Snapshot {
    /// Architectures the nodes run (from `kubernetes.io/arch`).
    pub fn architectures(&self) -> Vec<Arch> {
        let mut found: Vec<Arch> = self
            .nodes
            .iter()
            .filter_map(
                |n| match n.labels.get("kubernetes.io/arch").map(String::as_str) {
                    Some("arm64") => Some(Arch::Arm64),
                    Some("amd64") => Some(Arch::X86_64),
                    _ => None,
                },
            )
            .collect();
        found.sort_by_key(|a| *a as u8);
        found.dedup();
        found
    }

    /// Zone id (`use1-az1`) to zone name (`us-east-1a`), from the labels EKS puts on nodes.
    pub fn zone_names(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .filter_map(|n| {
                Some((
                    n.labels.get("topology.k8s.aws/zone-id")?.clone(),
                    n.zone.clone(),
                ))
            })
            .collect()
    }

    /// Zone names the nodes run in.
    pub fn zones(&self) -> Vec<String> {
        let mut zones: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.zone.clone())
            .filter(|z| !z.is_empty())
            .collect();
        zones.sort();
        zones.dedup();
        zones
    }
}

/// CPU quantity in millicores, rounded up: "250m", "0.5", "2", and metrics-server's
/// nanocores ("310123456n") and microcores ("12u").
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    let (number, per_milli) = [('n', 1e6), ('u', 1e3), ('m', 1.0)]
        .into_iter()
        .find_map(|(suffix, scale)| Some((q.strip_suffix(suffix)?, scale)))
        .unwrap_or((q, 1e-3));
    number
        .parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0 && v.is_finite())
        .map(|v| (v / per_milli).ceil() as u64)
}

/// Memory quantity in MiB, rounded up: "512Mi", "1Gi", "7291520Ki", "1G", "1e9", "1000000".
pub fn mem_mib(q: &str) -> Option<u64> {
    const MIB: f64 = 1024.0 * 1024.0;
    let q = q.trim();
    let units: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", MIB),
        ("Gi", MIB * 1024.0),
        ("Ti", MIB * 1024.0 * 1024.0),
        ("Pi", MIB * 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("m", 1e-3),
    ];
    let (number, factor) = units
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let bytes = number.parse::<f64>().ok().filter(|v| *v >= 0.0)? * factor;
    Some((bytes / MIB).ceil() as u64)
}

pub(crate) fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn int_or_string(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::to_owned)
        .or_else(|| v.as_i64().map(|i| i.to_string()))
}

/// A `taints` array as Kubernetes writes it; entries without key or effect are skipped.
pub(crate) fn taints(v: &Value) -> Vec<Taint> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(Taint {
                key: t["key"].as_str()?.to_owned(),
                value: t["value"].as_str().map(str::to_owned),
                effect: t["effect"].as_str()?.to_owned(),
            })
        })
        .collect()
}

pub fn parse_list(json: &[u8]) -> Result<Snapshot, SnapshotError> {
    let list: Value = serde_json::from_slice(json)?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .ok_or(SnapshotError::NotAList)?;
    let mut snapshot = Snapshot::default();
    let mut daemon_per_node: HashMap<String, [u64; 3]> = HashMap::new();
    let mut usage: HashMap<(String, String), Vec<(String, PodUsage)>> = HashMap::new();
    // namespace/claim -> bound volume, and volume -> the zones it can attach in.
    let mut claims: HashMap<String, String> = HashMap::new();
    let mut volumes: HashMap<String, Vec<String>> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let kind = item["kind"].as_str().unwrap_or_default();
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let error = |reason: &str| SnapshotError::Item {
            index,
            kind: kind.to_owned(),
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        match kind {
            "Node" => {
                let node = parse_node(item).map_err(|r| error(&r))?;
                if snapshot.region.is_none() {
                    snapshot.region = node.labels.get("topology.kubernetes.io/region").cloned();
                }
                snapshot.nodes.push(node);
            }
            "Pod" => {
                let phase = item["status"]["phase"].as_str().unwrap_or("Running");
                if matches!(phase, "Succeeded" | "Failed") {
                    continue;
                }
                // A rollout's placeholders hold nodes for pods to come: not workload, not cost.
                if item["metadata"]["labels"]
                    .get(crate::karpenter::RESERVATION_LABEL)
                    .is_some()
                {
                    continue;
                }
                let (pod, owner_kind) = parse_pod(item).map_err(|r| error(&r))?;
                let mirror = item["metadata"]["annotations"]
                    .get("kubernetes.io/config.mirror")
                    .is_some();
                if owner_kind.as_deref() == Some("DaemonSet") || mirror {
                    let slot = daemon_per_node
                        .entry(pod.spec.node.clone().unwrap_or_default())
                        .or_default();
                    slot[0] += pod.spec.cpu_m;
                    slot[1] += pod.spec.mem_mib;
                    slot[2] += 1;
                    snapshot.daemon_pods.push(pod);
                } else {
                    snapshot.pods.push(pod);
                }
            }
            "PodDisruptionBudget" => snapshot.pdbs.push(Pdb {
                namespace: item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                name: name.to_owned(),
                match_labels: str_map(&item["spec"]["selector"]["matchLabels"]),
                min_available: int_or_string(&item["spec"]["minAvailable"]),
                max_unavailable: int_or_string(&item["spec"]["maxUnavailable"]),
            }),
            "PodMetrics" => {
                let namespace = item["metadata"]["namespace"].as_str().unwrap_or("default");
                let containers = item["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let usage = PodUsage {
                            cpu_m: c["usage"]["cpu"].as_str().and_then(cpu_millis).unwrap_or(0),
                            mem_mib: c["usage"]["memory"].as_str().and_then(mem_mib).unwrap_or(0),
                        };
                        (c["name"].as_str().unwrap_or_default().to_owned(), usage)
                    })
                    .collect();
                usage.insert((namespace.to_owned(), name.to_owned()), containers);
            }
            "HorizontalPodAutoscaler" => snapshot.hpas.extend(Hpa::parse(item)),
            "PersistentVolumeClaim" => {
                if let Some(volume) = item["spec"]["volumeName"].as_str() {
                    let namespace = item["metadata"]["namespace"].as_str().unwrap_or("default");
                    claims.insert(format!("{namespace}/{name}"), volume.to_owned());
                }
            }
            "PersistentVolume" => {
                let zones = volume_zones(item);
                if !zones.is_empty() {
                    volumes.insert(name.to_owned(), zones);
                }
            }
            // Other kinds (Services, ReplicaSets, …) may ride along in a List; they do not matter here.
            _ => {}
        }
    }
    for pod in snapshot
        .pods
        .iter_mut()
        .chain(snapshot.daemon_pods.iter_mut())
    {
        let namespace = &pod.workload.namespace;
        pod.spec.volumes.retain_mut(|v| {
            let bound = claims
                .get(&format!("{namespace}/{}", v.claim))
                .and_then(|pv| volumes.get(pv));
            if let Some(zones) = bound {
                v.zones.clone_from(zones);
            }
            !v.zones.is_empty()
        });
    }
    if !usage.is_empty() {
        for pod in snapshot
            .pods
            .iter_mut()
            .chain(snapshot.daemon_pods.iter_mut())
        {
            let key = (pod.workload.namespace.clone(), pod.workload.name.clone());
            let Some(measured) = usage.get(&key) else {
                continue;
            };
            pod.usage = Some(
                measured
                    .iter()
                    .fold(PodUsage::default(), |sum, (_, u)| PodUsage {
                        cpu_m: sum.cpu_m + u.cpu_m,
                        mem_mib: sum.mem_mib + u.mem_mib,
                    }),
            );
            for container in &mut pod.containers {
                container.usage = measured
                    .iter()
                    .find(|(name, _)| *name == container.resources.name)
                    .map(|(_, u)| *u);
            }
        }
    }
    for [cpu, mem, pods] in daemon_per_node.into_values() {
        let o = &mut snapshot.daemonset_overhead;
        o.cpu_m = o.cpu_m.max(cpu);
        o.mem_mib = o.mem_mib.max(mem);
        o.pods = o.pods.max(u32::try_from(pods).unwrap_or(u32::MAX));
    }
    Ok(snapshot)
}

fn parse_node(item: &Value) -> Result<CurrentNode, String> {
    let labels = str_map(&item["metadata"]["labels"]);
    let allocatable = &item["status"]["allocatable"];
    let quantity = |key: &str| {
        allocatable[key]
            .as_str()
            .map(str::to_owned)
            .or_else(|| allocatable[key].as_u64().map(|v| v.to_string()))
    };
    let cpu_m = quantity("cpu")
        .and_then(|q| cpu_millis(&q))
        .ok_or("status.allocatable.cpu missing or invalid")?;
    let mem = quantity("memory")
        .and_then(|q| mem_mib(&q))
        .ok_or("status.allocatable.memory missing or invalid")?;
    let max_pods = quantity("pods")
        .and_then(|q| q.parse().ok())
        .ok_or("status.allocatable.pods missing or invalid")?;
    let gpus = quantity("nvidia.com/gpu")
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let capacity_type = match labels
        .get("karpenter.sh/capacity-type")
        .or_else(|| labels.get("eks.amazonaws.com/capacityType"))
        .map(String::as_str)
    {
        Some("spot" | "SPOT") => CapacityType::Spot,
        _ => CapacityType::OnDemand,
    };
    let mut taints = taints(&item["spec"]["taints"]);
    // The controller's own unschedulable taint mirrors spec.unschedulable.
    taints.retain(|t| t.key != "node.kubernetes.io/unschedulable");
    Ok(CurrentNode {
        name: item["metadata"]["name"]
            .as_str()
            .ok_or("metadata.name missing")?
            .to_owned(),
        instance_id: item["spec"]["providerID"]
            .as_str()
            .and_then(|id| id.rsplit('/').next())
            .filter(|id| id.starts_with("i-"))
            .map(str::to_owned),
        instance_type: labels
            .get("node.kubernetes.io/instance-type")
            .cloned()
            .unwrap_or_default(),
        zone: labels
            .get("topology.kubernetes.io/zone")
            .cloned()
            .unwrap_or_default(),
        capacity_type,
        cpu_m,
        mem_mib: mem,
        max_pods,
        gpus,
        price_hr: None,
        labels,
        taints,
        unschedulable: item["spec"]["unschedulable"].as_bool().unwrap_or(false),
        do_not_disrupt: item["metadata"]["annotations"][DO_NOT_DISRUPT] == "true",
        not_ready: item["status"]["conditions"]
            .as_array()
            .is_some_and(|conditions| {
                !conditions
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }),
    })
}

fn container_requests(containers: &Value) -> Vec<(u64, u64, u32)> {
    containers
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let r = &c["resources"]["requests"];
                    (
                        r["cpu"].as_str().and_then(cpu_millis).unwrap_or(0),
                        r["memory"].as_str().and_then(mem_mib).unwrap_or(0),
                        r["nvidia.com/gpu"]
                            .as_str()
                            .and_then(|g| g.parse().ok())
                            .or_else(|| {
                                r["nvidia.com/gpu"]
                                    .as_u64()
                                    .and_then(|g| u32::try_from(g).ok())
                            })
                            .unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Containers with their requests and limits, and from their statuses restarts and OOM kills.
fn pod_containers(containers: &Value, statuses: &Value) -> Vec<PodContainer> {
    let quantity =
        |v: &Value, key: &str, parse: fn(&str) -> Option<u64>| v[key].as_str().and_then(parse);
    containers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c["name"].as_str()?;
            let (requests, limits) = (&c["resources"]["requests"], &c["resources"]["limits"]);
            let status = statuses
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == name);
            let oom = |state: &str| {
                status.is_some_and(|s| s[state]["terminated"]["reason"] == "OOMKilled")
            };
            Some(PodContainer {
                resources: ContainerResources {
                    name: name.to_owned(),
                    cpu_request_m: quantity(requests, "cpu", cpu_millis).unwrap_or(0),
                    mem_request_mib: quantity(requests, "memory", mem_mib).unwrap_or(0),
                    cpu_limit_m: quantity(limits, "cpu", cpu_millis),
                    mem_limit_mib: quantity(limits, "memory", mem_mib),
                },
                usage: None,
                restarts: status
                    .and_then(|s| s["restartCount"].as_u64())
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                oom_killed: oom("state") || oom("lastState"),
            })
        })
        .collect()
}

fn parse_pod(item: &Value) -> Result<(SnapshotPod, Option<String>), String> {
    let meta = &item["metadata"];
    let spec = &item["spec"];
    let namespace = meta["namespace"].as_str().unwrap_or("default").to_owned();
    let name = meta["name"]
        .as_str()
        .ok_or("metadata.name missing")?
        .to_owned();
    let containers = container_requests(&spec["containers"]);
    let init = container_requests(&spec["initContainers"]);
    let sum = containers
        .iter()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    let max_init = init
        .iter()
        .fold((0, 0, 0), |a, c| (a.0.max(c.0), a.1.max(c.1), a.2.max(c.2)));
    let overhead = &spec["overhead"];
    let cpu_m = sum.0.max(max_init.0) + overhead["cpu"].as_str().and_then(cpu_millis).unwrap_or(0);
    let mem = sum.1.max(max_init.1) + overhead["memory"].as_str().and_then(mem_mib).unwrap_or(0);
    let owner = meta["ownerReferences"].as_array().and_then(|refs| {
        let controller = refs
            .iter()
            .find(|r| r["controller"].as_bool() == Some(true))
            .or_else(|| refs.first())?;
        Some(Owner {
            kind: controller["kind"].as_str()?.to_owned(),
            name: controller["name"].as_str()?.to_owned(),
        })
    });
    let mut node_selector = str_map(&spec["nodeSelector"]);
    // Required node affinity with one term of single-value `In` expressions is a selector too.
    if let Some([term]) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .map(Vec::as_slice)
    {
        for e in term["matchExpressions"].as_array().into_iter().flatten() {
            if let (Some(key), Some("In"), Some([value])) = (
                e["key"].as_str(),
                e["operator"].as_str(),
                e["values"].as_array().map(Vec::as_slice),
            ) && let Some(value) = value.as_str()
            {
                node_selector.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    let tolerations = spec["tolerations"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| serde_json::from_value::<Toleration>(t.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let owner_kind = owner.as_ref().map(|o| o.kind.clone());
    let annotations = str_map(&meta["annotations"]);
    let pinned_by = pinning_annotation(&annotations);
    let pinned = owner.is_none() || pinned_by.is_some();
    Ok((
        SnapshotPod {
            workload: WorkloadPod {
                namespace: namespace.clone(),
                name: name.clone(),
                labels: str_map(&meta["labels"]),
                annotations,
                owner,
            },
            spec: PodSpec {
                name: format!("{namespace}/{name}"),
                cpu_m,
                mem_mib: mem,
                gpus: sum.2.max(max_init.2),
                spot_ok: false,
                node_selector,
                tolerations,
                node: spec["nodeName"].as_str().map(str::to_owned),
                pinned,
                pinned_by,
                labels: BTreeMap::new(),
                affinity: affinity_terms(&spec["affinity"]),
                spread: spread_constraints(&spec["topologySpreadConstraints"]),
                // Zones are filled in once the list's claims and volumes are read.
                volumes: spec["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
                    .map(|claim| ZonalVolume {
                        claim: claim.to_owned(),
                        zones: Vec::new(),
                    })
                    .collect(),
            },
            usage: None,
            containers: pod_containers(&spec["containers"], &item["status"]["containerStatuses"]),
        },
        owner_kind,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Toleration {
    #[serde(default)]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// Empty tolerates every effect.
    #[serde(default)]
    pub effect: Option<String>,
}

impl Toleration {
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(effect) = &self.effect
            && !effect.is_empty()
            && effect != &taint.effect
        {
            return false;
        }
        match self.key.as_deref() {
            // An empty key with Exists tolerates everything.
            None | Some("") => self.operator.as_deref() == Some("Exists"),
            Some(key) if key != taint.key => false,
            Some(_) => match self.operator.as_deref() {
                Some("Exists") => true,
                _ => self.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
            },
        }
    }
}

/// One pod to place. `name` is `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodSpec {
    pub name: String,
    pub cpu_m: u64,
    pub mem_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    /// Whether the pod may run on spot capacity (see `eligibility` for how a snapshot decides).
    pub spot_ok: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Where the pod runs now, for consolidation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Set for pods an eviction would lose (no controller recreates them) or that ask not to be
    /// disrupted: their node is never drained by consolidation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// The annotation that pins the pod, when one does (`karpenter.sh/do-not-disrupt: "true"`,
    /// `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_by: Option<String>,
    /// What other pods' affinity and spread selectors match. A snapshot keeps them with the
    /// workload; planning copies them here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Pod affinity and anti-affinity terms over nodes and zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<PodAffinityTerm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<SpreadConstraint>,
    /// Bound persistent volumes that only some zones can attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ZonalVolume>,
}

/// Annotations with which a pod asks autoscalers never to evict it voluntarily.
const DO_NOT_DISRUPT_POD: (&str, &str) = (DO_NOT_DISRUPT, "true");
const NOT_SAFE_TO_EVICT: (&str, &str) = ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false");

/// The annotation (`key=value`) that forbids consolidating the pod's node, if any.
pub fn pinning_annotation(annotations: &BTreeMap<String, String>) -> Option<String> {
    [DO_NOT_DISRUPT_POD, NOT_SAFE_TO_EVICT]
        .into_iter()
        .find(|(key, value)| annotations.get(*key).map(String::as_str) == Some(*value))
        .map(|(key, value)| format!("{key}={value}"))
}

impl PodSpec {
    /// What the pod takes from a node: `[cpu_m, mem_mib, pods, gpus]`, the order of the
    /// optimizer's resource vectors.
    pub fn demand(&self) -> [u64; 4] {
        [self.cpu_m, self.mem_mib, 1, u64::from(self.gpus)]
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overhead {
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub pods: u32,
}

/// A node the cluster runs now, priced from the offerings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentNode {
    pub name: String,
    /// The EC2 instance, from `spec.providerID` (`aws:///us-east-1b/i-0abc…`).
    #[serde(default)]
    pub instance_id: Option<String>,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    /// Allocatable capacity as the node reports it.
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub max_pods: u32,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default)]
    pub price_hr: Option<f64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(default)]
    pub unschedulable: bool,
    /// The kubelet does not report the node Ready (a node without conditions counts as ready).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_ready: bool,
    /// Annotated `karpenter.sh/do-not-disrupt: "true"`: no voluntary disruption.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_disrupt: bool,
}

impl CurrentNode {
    /// The Karpenter NodePool that launched the node, if one did.
    pub fn node_pool(&self) -> Option<&str> {
        self.labels.get(NODEPOOL_LABEL).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner: Option<Owner>,
}

impl WorkloadPod {
    /// The kind and name of the controller users know the pod by: a ReplicaSet's pods belong
    /// to its Deployment (the ReplicaSet is named by the Deployment plus the pod-template hash).
    pub fn controller(&self) -> Option<(String, String)> {
        let owner = self.owner.as_ref()?;
        match (owner.kind.as_str(), owner.name.rsplit_once('-')) {
            ("ReplicaSet", Some((deployment, hash)))
                if self.labels.get("pod-template-hash").map(String::as_str) == Some(hash) =>
            {
                Some(("Deployment".to_owned(), deployment.to_owned()))
            }
            (kind, _) => Some((kind.to_owned(), owner.name.clone())),
        }
    }
}

/// A PodDisruptionBudget's selector and limits; limits are integers or percentages ("50%").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pdb {
    pub namespace: String,
    pub name: String,
    pub match_labels: BTreeMap<String, String>,
    pub min_available: Option<String>,
    pub max_unavailable: Option<String>,
}

impl Pdb {
    pub fn selects(&self, pod: &WorkloadPod) -> bool {
        pod.namespace == self.namespace
            && !self.match_labels.is_empty()
            && self
                .match_labels
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }

    /// Whether the budget forbids every voluntary disruption of `selected` pods.
    pub fn forbids_disruption(&self, selected: usize) -> bool {
        let zero = |v: &str| v.trim_end_matches('%').trim().parse::<u64>() == Ok(0);
        if self.max_unavailable.as_deref().is_some_and(zero) {
            return true;
        }
        match self.min_available.as_deref() {
            Some(v) if v.ends_with('%') => v
                .trim_end_matches('%')
                .parse::<u64>()
                .is_ok_and(|p| p >= 100),
            Some(v) => v.parse::<u64>().is_ok_and(|n| n >= selected as u64),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_that_ask_not_to_be_disrupted_are_pinned_by_their_annotation() {
        let pinned_by = |key: &str, value: &str| {
            pinning_annotation(&BTreeMap::from([(key.to_owned(), value.to_owned())]))
        };
        assert_eq!(
            pinned_by("karpenter.sh/do-not-disrupt", "true").as_deref(),
            Some("karpenter.sh/do-not-disrupt=true")
        );
        assert_eq!(
            pinned_by("cluster-autoscaler.kubernetes.io/safe-to-evict", "false").as_deref(),
            Some("cluster-autoscaler.kubernetes.io/safe-to-evict=false")
        );
        assert_eq!(
            pinned_by("cluster-autoscaler.kubernetes.io/safe-to-evict", "true"),
            None
        );
        assert_eq!(pinned_by("karpenter.sh/do-not-disrupt", "false"), None);
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("x"), None);
        assert_eq!(cpu_millis("-5m"), None);
        assert_eq!(cpu_millis("310123456n"), Some(311));
        assert_eq!(cpu_millis("12u"), Some(1));
        assert_eq!(mem_mib("512Mi"), Some(512));
        assert_eq!(mem_mib("1Gi"), Some(1024));
        assert_eq!(mem_mib("7291520Ki"), Some(7121));
        assert_eq!(mem_mib("1G"), Some(954));
        assert_eq!(mem_mib("1048576"), Some(1));
        assert_eq!(mem_mib("-1Mi"), None);
    }

    #[test]
    fn list_becomes_nodes_pods_pdbs_and_daemonset_overhead() {
        let list = serde_json::json!({"apiVersion":"v1","kind":"List","items":[
            {"kind":"Node","metadata":{"name":"n1","labels":{
                "node.kubernetes.io/instance-type":"m5.large","topology.kubernetes.io/zone":"us-east-1a",
                "topology.kubernetes.io/region":"us-east-1","eks.amazonaws.com/capacityType":"SPOT"}},
             "spec":{"taints":[{"key":"node.kubernetes.io/unschedulable","effect":"NoSchedule"}],"unschedulable":true},
             "status":{"allocatable":{"cpu":"1930m","memory":"7291520Ki","pods":"29"}}},
            {"kind":"Pod","metadata":{"name":"api-1","namespace":"web","labels":{"app":"api"},
                "ownerReferences":[{"kind":"ReplicaSet","name":"api-7d9","controller":true}]},
             "spec":{"nodeName":"n1","nodeSelector":{"kubernetes.io/arch":"amd64"},
                "containers":[{"resources":{"requests":{"cpu":"250m","memory":"256Mi"}}},
                              {"resources":{"requests":{"cpu":"100m"}}}],
                "initContainers":[{"resources":{"requests":{"cpu":"1","memory":"64Mi"}}}]},
             "status":{"phase":"Running"}},
            {"kind":"Pod","metadata":{"name":"done","namespace":"web"},"spec":{"containers":[]},"status":{"phase":"Succeeded"}},
            {"kind":"Pod","metadata":{"name":"aws-node-x","namespace":"kube-system",
                "ownerReferences":[{"kind":"DaemonSet","name":"aws-node","controller":true}]},
             "spec":{"nodeName":"n1","containers":[{"resources":{"requests":{"cpu":"25m","memory":"64Mi"}}}]}},
            {"kind":"PodDisruptionBudget","metadata":{"name":"api","namespace":"web"},
             "spec":{"minAvailable":1,"selector":{"matchLabels":{"app":"api"}}}},
            {"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1",
             "metadata":{"name":"api-1","namespace":"web"},
             "containers":[{"name":"a","usage":{"cpu":"310123456n","memory":"200Mi"}},
                           {"name":"b","usage":{"cpu":"20m","memory":"10Mi"}}]}
        ]});
        let s = parse_list(list.to_string().as_bytes()).unwrap();
        assert_eq!(s.region.as_deref(), Some("us-east-1"));
        let n = &s.nodes[0];
        assert_eq!(
            (n.cpu_m, n.mem_mib, n.max_pods, n.capacity_type),
            (1930, 7121, 29, CapacityType::Spot)
        );
        assert!(n.unschedulable && n.taints.is_empty());
        assert_eq!(s.pods.len(), 1);
        let p = &s.pods[0].spec;
        assert_eq!(
            (p.name.as_str(), p.cpu_m, p.mem_mib),
            ("web/api-1", 1000, 256)
        );
        assert_eq!(p.node.as_deref(), Some("n1"));
        assert!(!p.pinned);
        assert_eq!(
            s.daemonset_overhead,
            Overhead {
                cpu_m: 25,
                mem_mib: 64,
                pods: 1
            }
        );
        assert_eq!(s.pdbs[0].min_available.as_deref(), Some("1"));
        assert_eq!(
            s.pods[0].usage,
            Some(PodUsage {
                cpu_m: 331,
                mem_mib: 210
            }),
            "usage summed over containers"
        );
        assert_eq!(s.daemon_pods.len(), 1, "kept apart for cost allocation");
        assert_eq!(s.daemon_pods[0].usage, None);
    }

    #[test]
    fn malformed_snapshots_are_named() {
        assert!(matches!(
            parse_list(b"{\"kind\":\"List\"}"),
            Err(SnapshotError::NotAList)
        ));
        let bad = serde_json::json!({"items":[{"kind":"Node","metadata":{"name":"n1"},"status":{"allocatable":{"cpu":"2"}}}]});
        let err = parse_list(bad.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Node n1") && err.contains("memory"), "{err}");
    }
}
