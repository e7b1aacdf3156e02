//! A minimal Karpenter inside the simulated Kubernetes API: NodePools and EC2NodeClasses are
//! served (and changed through the API like any object), and Pending pods that fit no node get
//! one from the NodePool of the highest weight whose requirements, labels and taints admit
//! them, within its limits: the cheapest admitted offering (spot before on-demand where a pool
//! allows both) that fits the pod next to the node's DaemonSet pod. Empty nodes of NodePools
//! that consolidate are removed, and a deleted NodePool's nodes go with it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use spotwise_core::karpenter::Requirement;

use crate::kube::{KubeState, cpu_millis, mem_mib, node, pod, requests_of};

/// One instance type in one zone and capacity type Karpenter may launch, with its price.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOffering {
    pub instance_type: String,
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    pub price_hr: f64,
    /// Allocatable.
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub max_pods: u32,
    /// What a node counts against NodePool limits.
    pub capacity_cpu_m: u64,
    pub capacity_mem_mib: u64,
}

impl SimOffering {
    /// The labels Karpenter puts on a node of this offering.
    fn labels(&self) -> BTreeMap<String, String> {
        let family = self
            .instance_type
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let category: String = family
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let generation: String = family
            .chars()
            .skip(category.len())
            .take_while(char::is_ascii_digit)
            .collect();
        BTreeMap::from([
            (
                "node.kubernetes.io/instance-type".to_owned(),
                self.instance_type.clone(),
            ),
            ("topology.kubernetes.io/zone".to_owned(), self.zone.clone()),
            (
                "karpenter.sh/capacity-type".to_owned(),
                self.capacity_type.clone(),
            ),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("karpenter.k8s.aws/instance-family".to_owned(), family),
            ("karpenter.k8s.aws/instance-category".to_owned(), category),
            (
                "karpenter.k8s.aws/instance-generation".to_owned(),
                generation,
            ),
        ])
    }
}

#[derive(Debug, Default)]
pub struct SimKarpenter {
    pub node_pools: BTreeMap<String, Value>,
    pub node_classes: BTreeMap<String, Value>,
    pub offerings: Vec<SimOffering>,
    /// (instance type, zone, capacity type) that has no capacity now.
    pub no_capacity: BTreeSet<(String, String, String)>,
    /// Nodes launched and removed.
    pub launched: u32,
    pub removed: u32,
}

fn limit(pool: &Value, resource: &str) -> Option<u64> {
    let text = match &pool["spec"]["limits"][resource] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(match resource {
        "cpu" => cpu_millis(&text),
        _ => mem_mib(&text),
    })
}

impl KubeState {
    /// Karpenter's answer to Pending pods: a node for each pod that fits none, from the first
    /// NodePool (by weight) that admits it; binds pods after each launch. Returns the launches.
    pub(crate) fn provision(&mut self) -> usize {
        let mut launches = 0;
        // A pod no pool could launch for stays so while launches only use up limits.
        let mut unlaunchable: BTreeSet<String> = BTreeSet::new();
        while launches < 10_000 {
            let mut pending: Vec<(String, u64, u64)> = self
                .pods
                .iter()
                .filter(|(k, p)| {
                    p["spec"]["nodeName"].as_str().is_none() && !unlaunchable.contains(*k)
                })
                .map(|(k, p)| {
                    let r = requests_of(p);
                    (k.clone(), r.cpu_m, r.mem_mib)
                })
                .collect();
            pending.sort_by(|a, b| (b.1, b.2, &a.0).cmp(&(a.1, a.2, &b.0)));
            let Some(launched) = pending.iter().find_map(|(key, _, _)| {
                let launched = self.launch_for(key);
                if launched.is_none() {
                    unlaunchable.insert(key.clone());
                }
                launched
            }) else {
                return launches;
            };
            self.add_node(launched.0);
            let (key, daemon) = launched.1;
            self.pods.insert(key, daemon);
            launches += 1;
            self.bind();
        }
        launches
    }

    /// A node for the pod `key`, and its DaemonSet pod, when a NodePool can launch one.
    fn launch_for(&mut self, key: &str) -> Option<(Value, (String, Value))> {
        let pending = self.pods.get(key)?.clone();
        let need = requests_of(&pending);
        let karpenter = self.karpenter.as_ref()?;
        let offering_labels: Vec<BTreeMap<String, String>> = karpenter
            .offerings
            .iter()
            .map(SimOffering::labels)
            .collect();
        let mut pools: Vec<&Value> = karpenter.node_pools.values().collect();
        pools.sort_by_key(|p| {
            (
                std::cmp::Reverse(p["spec"]["weight"].as_u64().unwrap_or(0)),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        });
        for pool in pools {
            let name = pool["metadata"]["name"].as_str().unwrap_or_default();
            let template = &pool["spec"]["template"];
            let requirements: Vec<Requirement> = template["spec"]["requirements"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect();
            let (used_cpu, used_mem) = self
                .nodes
                .values()
                .filter(|n| n["metadata"]["labels"]["karpenter.sh/nodepool"] == name)
                .fold((0, 0), |(c, m), n| {
                    (
                        c + cpu_millis(n["status"]["capacity"]["cpu"].as_str().unwrap_or("0")),
                        m + mem_mib(n["status"]["capacity"]["memory"].as_str().unwrap_or("0")),
                    )
                });
            let allows_spot = requirements
                .iter()
                .all(|r| r.key != "karpenter.sh/capacity-type" || r.admits(Some("spot")));
            let mut best: Option<(&SimOffering, Value)> = None;
            let (cpu_limit, mem_limit) = (limit(pool, "cpu"), limit(pool, "memory"));
            for (offering, labels) in karpenter.offerings.iter().zip(&offering_labels) {
                let fits = offering.cpu_m >= need.cpu_m + DAEMON_CPU_M
                    && offering.mem_mib >= need.mem_mib + DAEMON_MEM_MIB
                    && offering.max_pods >= 2;
                let within_limits = cpu_limit
                    .is_none_or(|l| used_cpu + offering.capacity_cpu_m <= l)
                    && mem_limit.is_none_or(|l| used_mem + offering.capacity_mem_mib <= l);
                if !(fits && within_limits) {
                    continue;
                }
                let admitted = requirements
                    .iter()
                    .all(|r| r.admits(labels.get(&r.key).map(String::as_str)));
                if !admitted
                    || karpenter.no_capacity.contains(&(
                        offering.instance_type.clone(),
                        offering.zone.clone(),
                        offering.capacity_type.clone(),
                    ))
                {
                    continue;
                }
                let mut labels = labels.clone();
                for (k, v) in template["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    if let Some(v) = v.as_str() {
                        labels.insert(k.clone(), v.to_owned());
                    }
                }
                labels.insert("karpenter.sh/nodepool".into(), name.to_owned());
                let candidate = json!({
                    "metadata": {"labels": labels},
                    "spec": {"taints": template["spec"]["taints"]},
                });
                if !crate::kube::admits(&candidate, &pending) {
                    continue;
                }
                let rank = |o: &SimOffering| (allows_spot && o.capacity_type != "spot", o.price_hr);
                if best.as_ref().is_none_or(|(b, _)| {
                    rank(offering).partial_cmp(&rank(b)) == Some(std::cmp::Ordering::Less)
                }) {
                    best = Some((offering, candidate));
                }
            }
            if let Some((offering, candidate)) = best {
                let offering = offering.clone();
                return Some(self.new_node(&offering, &candidate));
            }
        }
        None
    }

    fn new_node(&mut self, offering: &SimOffering, candidate: &Value) -> (Value, (String, Value)) {
        let karpenter = self.karpenter.get_or_insert_with(SimKarpenter::default);
        karpenter.launched += 1;
        let n = karpenter.launched;
        let name = format!("ip-10-77-{}-{}.ec2.internal", n / 250, n % 250);
        let id = format!("i-0ca7{n:013x}");
        let mut registered = node(
            &name,
            &id,
            &offering.instance_type,
            &offering.zone,
            &offering.capacity_type,
            (
                &format!("{}m", offering.cpu_m),
                &format!("{}Mi", offering.mem_mib),
                &offering.max_pods.to_string(),
            ),
            candidate["metadata"]["labels"].clone(),
        );
        registered["spec"]["taints"] = candidate["spec"]["taints"].clone();
        registered["status"]["capacity"] = json!({
            "cpu": format!("{}m", offering.capacity_cpu_m),
            "memory": format!("{}Mi", offering.capacity_mem_mib),
        });
        registered["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        let daemon = pod(
            "kube-system",
            &format!("aws-node-{}", &id[id.len() - 5..]),
            &name,
            "DaemonSet",
            json!({"spec": {"containers": [{"name": "main", "image": "registry.example/app:1",
                "resources": {"requests": {"cpu": format!("{DAEMON_CPU_M}m"), "memory": format!("{DAEMON_MEM_MIB}Mi")}}}]}}),
        );
        (registered, daemon)
    }

    /// Karpenter's consolidation of empty nodes: every node of a NodePool that runs no
    /// workload pod goes, unless it or its pool says not to. Returns the nodes removed.
    pub fn consolidate(&mut self) -> usize {
        let Some(karpenter) = &self.karpenter else {
            return 0;
        };
        let empty: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, node)| {
                let Some(pool) = node["metadata"]["labels"]["karpenter.sh/nodepool"].as_str()
                else {
                    return false;
                };
                let never = karpenter
                    .node_pools
                    .get(pool)
                    .is_some_and(|p| p["spec"]["disruption"]["consolidateAfter"] == "Never");
                let pinned =
                    node["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true";
                let busy = self.pods.values().any(|p| {
                    p["spec"]["nodeName"] == name.as_str()
                        && p["metadata"]["ownerReferences"][0]["kind"] != "DaemonSet"
                });
                !never && !pinned && !busy
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &empty {
            self.remove_node(name);
        }
        if let Some(karpenter) = &mut self.karpenter {
            karpenter.removed += u32::try_from(empty.len()).unwrap_or(0);
        }
        empty.len()
    }

    /// A deleted NodePool's nodes are drained and removed with it.
    pub(crate) fn nodes_of_pool(&self, pool: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n["metadata"]["labels"]["karpenter.sh/nodepool"] == pool)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// What each node's DaemonSet pod requests.
const DAEMON_CPU_M: u64 = 50;
const DAEMON_MEM_MIB: u64 = 128;
