//! The simulated cluster behind the agent: one node per EC2 instance moto launched, with the
//! allocatable EKS leaves of the real catalogue's type, and the pods of a small company spread
//! over them (web and API Deployments, a ledger StatefulSet under a PodDisruptionBudget,
//! batch jobs, a cache, and a DaemonSet on every node), sized to use about a third of the
//! capacity, as clusters sized for a peak do.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Value, json};
use spotwise_core::domain::{CapacityType, InstanceType};
use spotwise_testkit::karpenter::{SimKarpenter, SimOffering};
use spotwise_testkit::kube::{KubeState, node, pod};

use crate::Instance;

/// The shipped instance catalogue (`data/ec2-instance-types.json`).
pub fn catalogue() -> anyhow::Result<BTreeMap<String, InstanceType>> {
    let path = spotwise_testkit::repo_root().join("data/ec2-instance-types.json");
    let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
    Ok(
        spotwise_core::pricing::catalogue::parse_catalogue_file(&bytes, "catalogue")?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect(),
    )
}

/// (namespace, workload kind, name, replicas, cpu request, memory request)
const WORKLOADS: &[(&str, &str, &str, u32, &str, &str)] = &[
    ("shop", "Deployment", "web", 8, "500m", "1Gi"),
    ("shop", "Deployment", "api", 6, "1", "2Gi"),
    ("payments", "StatefulSet", "ledger", 3, "1", "4Gi"),
    ("batch", "Deployment", "reports", 4, "250m", "512Mi"),
    ("data", "Deployment", "cache", 2, "2", "6Gi"),
];

pub fn generate(
    instances: &[Instance],
    catalogue: &BTreeMap<String, InstanceType>,
) -> anyhow::Result<KubeState> {
    generate_scaled(instances, catalogue, 1, 1)
}

/// The same company `replicas` times over, each pod requesting a `divisor`-th of the cpu and
/// memory, for clusters of hundreds of nodes and thousands of pods.
pub fn generate_scaled(
    instances: &[Instance],
    catalogue: &BTreeMap<String, InstanceType>,
    replicas: u32,
    divisor: u32,
) -> anyhow::Result<KubeState> {
    let mut state = KubeState::default();
    for instance in instances {
        let spec = catalogue
            .get(&instance.instance_type)
            .with_context(|| format!("{} is not in the catalogue", instance.instance_type))?;
        let (cpu_m, mem_mib) = spotwise_optimizer::catalog::allocatable(spec);
        let capacity = if instance.spot { "spot" } else { "on-demand" };
        state.nodes.insert(
            instance.node.clone(),
            node(
                &instance.node,
                &instance.id,
                &instance.instance_type,
                &instance.zone,
                capacity,
                (&format!("{cpu_m}m"), &format!("{mem_mib}Mi"), &spec.max_pods.to_string()),
                json!({
                    "eks.amazonaws.com/nodegroup": instance.nodegroup,
                    "eks.amazonaws.com/capacityType": if instance.spot { "SPOT" } else { "ON_DEMAND" },
                }),
            ),
        );
        let (key, daemon) = pod(
            "kube-system",
            &format!(
                "aws-node-{}",
                &instance.id[instance.id.len().saturating_sub(5)..]
            ),
            &instance.node,
            "DaemonSet",
            requests("50m", "128Mi"),
        );
        state.pods.insert(key, daemon);
    }
    let nodes: Vec<&Instance> = instances.iter().collect();
    let mut next = 0_usize;
    for (namespace, kind, name, count, cpu, memory) in WORKLOADS {
        let template_hash = "5d8f7c9b4";
        let count = count * replicas;
        let (cpu, memory) = (
            divide(cpu, divisor, "m", 1000),
            divide(memory, divisor, "Mi", 1024),
        );
        for index in 0..count {
            let host = nodes.get(next % nodes.len().max(1)).context("no nodes")?;
            next += 1;
            let (pod_name, owner_kind, owner_name, labels) = match *kind {
                "StatefulSet" => (
                    format!("{name}-{index}"),
                    "StatefulSet",
                    (*name).to_owned(),
                    json!({"app": name}),
                ),
                _ => (
                    format!("{name}-{template_hash}-{index:02}"),
                    "ReplicaSet",
                    format!("{name}-{template_hash}"),
                    json!({"app": name, "pod-template-hash": template_hash}),
                ),
            };
            let mut extra = requests(&cpu, &memory);
            extra["metadata"] = json!({
                "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name, "uid": format!("uid-{name}")}],
            });
            let (key, value) = pod(namespace, &pod_name, &host.node, owner_kind, extra);
            state.pods.insert(key, value);
        }
        state
            .replicas
            .insert(format!("{namespace}/{name}"), i64::from(count));
        state.add_workload(
            namespace,
            kind,
            name,
            requests(&cpu, &memory)["spec"]["containers"].clone(),
        );
    }
    state.pdbs.push(json!({
        "metadata": {"name": "ledger", "namespace": "payments"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "ledger"}}},
        "status": {"disruptionsAllowed": 1}
    }));
    Ok(state)
}

/// `quantity` (`500m`, `2`, `512Mi`, `4Gi`) over `divisor`, in `unit` (`m` or `Mi`, of which a
/// whole `2` or `4Gi` holds `per_whole`).
fn divide(quantity: &str, divisor: u32, unit: &str, per_whole: u64) -> String {
    if divisor <= 1 {
        return quantity.to_owned();
    }
    let small = quantity
        .strip_suffix(unit)
        .and_then(|n| n.parse::<u64>().ok());
    let whole = quantity
        .trim_end_matches("Gi")
        .parse::<u64>()
        .ok()
        .map(|n| n * per_whole);
    let amount = small.or(whole).unwrap_or(0);
    format!("{}{unit}", (amount / u64::from(divisor)).max(1))
}

fn requests(cpu: &str, memory: &str) -> Value {
    json!({"spec": {"containers": [{"name": "main", "image": "registry.example/app:1",
        "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}})
}

/// The same cluster run by Karpenter instead of managed node groups: each group is a
/// NodePool of the customer's (its capacity type and instance family, the EC2NodeClass
/// `default`), its nodes are that pool's, and the ledger StatefulSet selects on-demand
/// capacity, as Karpenter users keep stateful workloads off spot.
pub fn karpenterize(state: &mut KubeState, groups: &[crate::Group]) {
    for node in state.nodes.values_mut() {
        let labels = &mut node["metadata"]["labels"];
        let pool = labels["eks.amazonaws.com/nodegroup"].clone();
        if let Some(labels) = labels.as_object_mut() {
            labels.remove("eks.amazonaws.com/nodegroup");
            labels.remove("eks.amazonaws.com/capacityType");
            labels.insert("karpenter.sh/nodepool".into(), pool);
        }
    }
    for pod in state.pods.values_mut() {
        if pod["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet" {
            pod["spec"]["nodeSelector"] = json!({"karpenter.sh/capacity-type": "on-demand"});
        }
    }
    let mut karpenter = SimKarpenter::default();
    for group in groups {
        let family = group.instance_type.split('.').next().unwrap_or_default();
        karpenter.node_pools.insert(
            group.nodegroup.to_owned(),
            json!({
                "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                "metadata": {"name": group.nodegroup, "resourceVersion": "7",
                    "annotations": {"karpenter.sh/nodepool-hash": "4123805637126522335"}},
                "spec": {
                    "template": {"spec": {
                        "requirements": [
                            {"key": "karpenter.sh/capacity-type", "operator": "In",
                             "values": [if group.spot { "spot" } else { "on-demand" }]},
                            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": [family]},
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                        ],
                        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                        "expireAfter": "720h"
                    }},
                    "limits": {"cpu": 1000, "memory": "1000Gi"},
                    "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized",
                        "consolidateAfter": "1m", "budgets": [{"nodes": "20%"}]}
                }
            }),
        );
    }
    karpenter.node_classes.insert(
        "default".into(),
        json!({
            "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": {"role": "KarpenterNodeRole-prod", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "prod"}}],
                "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "prod"}}]}
        }),
    );
    state.karpenter = Some(karpenter);
    // As the agent's manifest (infra/agent/agent.yaml) ships it.
    for (class, value) in [(CapacityType::Spot, -20), (CapacityType::OnDemand, -10)] {
        state.priority_classes.insert(
            spotwise_core::karpenter::reservation_priority_class(class).into(),
            value,
        );
    }
}

/// What the simulated Karpenter may launch: the region's offerings at the shipped prices.
pub fn karpenter_offerings(offerings: &[spotwise_optimizer::model::Offering]) -> Vec<SimOffering> {
    offerings
        .iter()
        .map(|o| {
            let (capacity_cpu_m, capacity_mem_mib) = spotwise_optimizer::catalog::capacity(o);
            SimOffering {
                instance_type: o.instance_type.clone(),
                zone: o.zone.clone(),
                capacity_type: match o.capacity_type {
                    spotwise_core::domain::CapacityType::Spot => "spot".into(),
                    spotwise_core::domain::CapacityType::OnDemand => "on-demand".into(),
                },
                price_hr: o.price_hr,
                cpu_m: o.cpu_m,
                mem_mib: o.mem_mib,
                max_pods: o.max_pods,
                capacity_cpu_m,
                capacity_mem_mib,
            }
        })
        .collect()
}
