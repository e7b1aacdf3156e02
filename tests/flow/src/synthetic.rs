//! Cluster snapshots of any size with the metadata real clusters carry: Helm and
//! `app.kubernetes.io` labels, pod-template hashes, checksum and Prometheus annotations, the
//! tolerations every pod gets, and the EKS node labels. For the cost model's day and the
//! 20,000-pod scale run; deterministic for a seed, usage varying with the tick.

use std::collections::BTreeMap;

use spotwise_core::domain::{CapacityType, Taint};
use spotwise_core::rightsizing::ContainerResources;
use spotwise_core::snapshot::{
    CurrentNode, Overhead, Owner, Pdb, PodContainer, PodSpec, PodUsage, Snapshot, SnapshotPod,
    Toleration, WorkloadPod,
};

/// One node to put in the snapshot: from the instances moto launched, or invented.
#[derive(Debug, Clone)]
pub struct NodeSeed {
    pub name: String,
    pub instance_id: String,
    pub instance_type: String,
    pub zone: String,
    pub spot: bool,
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub max_pods: u32,
}

/// Nodes of `instance_type` (allocatable from the catalogue) spread over three zones.
pub fn nodes(
    count: usize,
    instance_type: &str,
    cpu_m: u64,
    mem_mib: u64,
    max_pods: u32,
) -> Vec<NodeSeed> {
    (0..count)
        .map(|i| NodeSeed {
            name: format!(
                "ip-10-{}-{}-{}.ec2.internal",
                i / 65_536 % 256,
                i / 256 % 256,
                i % 256
            ),
            instance_id: format!("i-{:017x}", 0x0a00_0000_u64 + i as u64),
            instance_type: instance_type.to_owned(),
            zone: ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3].to_owned(),
            spot: i % 4 == 3,
            cpu_m,
            mem_mib,
            max_pods,
        })
        .collect()
}

const TEAMS: [&str; 8] = [
    "checkout", "payments", "search", "catalog", "identity", "platform", "data", "ml",
];

fn tolerations() -> Vec<Toleration> {
    [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    .into_iter()
    .map(|key| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        value: None,
        effect: Some("NoExecute".to_owned()),
    })
    .collect()
}

/// A snapshot of `nodes` running `pods` workload pods (in Deployments of about ten replicas)
/// plus two DaemonSet pods per node. `tick` moves the usage figures, as metrics-server does
/// between two snapshots.
pub fn snapshot(nodes: &[NodeSeed], pods: usize, tick: u64) -> Snapshot {
    let mut snapshot = Snapshot {
        region: Some("us-east-1".to_owned()),
        daemonset_overhead: Overhead {
            cpu_m: 150,
            mem_mib: 300,
            pods: 2,
        },
        ..Snapshot::default()
    };
    for (i, node) in nodes.iter().enumerate() {
        let labels = BTreeMap::from([
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/hostname".to_owned(), node.name.clone()),
            (
                "node.kubernetes.io/instance-type".to_owned(),
                node.instance_type.clone(),
            ),
            (
                "topology.kubernetes.io/region".to_owned(),
                "us-east-1".to_owned(),
            ),
            ("topology.kubernetes.io/zone".to_owned(), node.zone.clone()),
            (
                "topology.k8s.aws/zone-id".to_owned(),
                format!("use1-az{}", [1, 2, 4][i % 3]),
            ),
            (
                "eks.amazonaws.com/capacityType".to_owned(),
                if node.spot { "SPOT" } else { "ON_DEMAND" }.to_owned(),
            ),
            (
                "eks.amazonaws.com/nodegroup".to_owned(),
                if node.spot { "spot" } else { "general" }.to_owned(),
            ),
            (
                "eks.amazonaws.com/nodegroup-image".to_owned(),
                "ami-0c2b8ca1dad447f8a".to_owned(),
            ),
            (
                "k8s.io/cloud-provider-aws".to_owned(),
                "8f3d6f8b2c7a".to_owned(),
            ),
        ]);
        snapshot.nodes.push(CurrentNode {
            name: node.name.clone(),
            instance_id: Some(node.instance_id.clone()),
            instance_type: node.instance_type.clone(),
            zone: node.zone.clone(),
            capacity_type: if node.spot {
                CapacityType::Spot
            } else {
                CapacityType::OnDemand
            },
            cpu_m: node.cpu_m,
            mem_mib: node.mem_mib,
            max_pods: node.max_pods,
            gpus: 0,
            price_hr: None,
            labels,
            taints: if node.spot {
                vec![Taint {
                    key: "spot".to_owned(),
                    value: Some("true".to_owned()),
                    effect: "PreferNoSchedule".to_owned(),
                }]
            } else {
                Vec::new()
            },
            unschedulable: false,
            not_ready: false,
            do_not_disrupt: false,
        });
        for daemon in ["aws-node", "kube-proxy"] {
            snapshot.daemon_pods.push(pod(
                "kube-system",
                daemon,
                &format!("{daemon}-{:05x}", i),
                Owner {
                    kind: "DaemonSet".to_owned(),
                    name: daemon.to_owned(),
                },
                (75, 150),
                &node.name,
                tick,
            ));
        }
    }
    for i in 0..pods {
        let workload = i / 10;
        let team = TEAMS[workload % TEAMS.len()];
        let app = format!("{team}-svc-{workload:04}");
        let node = &nodes[(i * 7 + workload) % nodes.len().max(1)];
        let cpu = [100, 250, 500, 1000][workload % 4];
        let mem = [256, 512, 1024, 2048][(workload / 4) % 4];
        snapshot.pods.push(pod(
            team,
            &app,
            &format!("{app}-7c9f8b6d5-{:05x}", i),
            Owner {
                kind: "Deployment".to_owned(),
                name: app.clone(),
            },
            (cpu, mem),
            &node.name,
            tick,
        ));
        if i % 10 == 0 {
            snapshot.pdbs.push(Pdb {
                namespace: team.to_owned(),
                name: app.clone(),
                match_labels: BTreeMap::from([("app.kubernetes.io/name".to_owned(), app)]),
                min_available: None,
                max_unavailable: Some("1".to_owned()),
            });
        }
    }
    snapshot
}

fn pod(
    namespace: &str,
    app: &str,
    name: &str,
    owner: Owner,
    (cpu_m, mem_mib): (u64, u64),
    node: &str,
    tick: u64,
) -> SnapshotPod {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), app.to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            format!("{app}-prod"),
        ),
        ("app.kubernetes.io/version".to_owned(), "1.14.2".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "Helm".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), namespace.to_owned()),
        ("helm.sh/chart".to_owned(), format!("{app}-3.2.1")),
        ("pod-template-hash".to_owned(), "7c9f8b6d5".to_owned()),
        ("team".to_owned(), namespace.to_owned()),
        (
            "cost-center".to_owned(),
            format!("cc-{}", namespace.len() * 1000),
        ),
    ]);
    let annotations = BTreeMap::from([
        (
            "checksum/config".to_owned(),
            "9f2c1e0b7a4d8c6e5f3b2a1908d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9".to_owned(),
        ),
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), "9090".to_owned()),
        (
            "kubectl.kubernetes.io/restartedAt".to_owned(),
            "2026-11-30T08:14:02Z".to_owned(),
        ),
        ("kubernetes.io/psp".to_owned(), "eks.privileged".to_owned()),
    ]);
    // Usage drifts with the tick, so consecutive snapshots differ as real ones do.
    let wobble = (tick
        .wrapping_mul(2_654_435_761)
        .wrapping_add(name.len() as u64))
        % 40;
    let usage = PodUsage {
        cpu_m: cpu_m * (30 + wobble) / 100,
        mem_mib: mem_mib * (50 + wobble) / 100,
    };
    SnapshotPod {
        workload: WorkloadPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels,
            annotations,
            owner: Some(owner),
        },
        spec: PodSpec {
            name: format!("{namespace}/{name}"),
            cpu_m,
            mem_mib,
            gpus: 0,
            spot_ok: false,
            node_selector: BTreeMap::from([("kubernetes.io/os".to_owned(), "linux".to_owned())]),
            tolerations: tolerations(),
            node: Some(node.to_owned()),
            ..PodSpec::default()
        },
        usage: Some(usage),
        // One container per pod, as the usage history keeps it.
        containers: vec![PodContainer {
            resources: ContainerResources {
                name: "app".into(),
                cpu_request_m: cpu_m,
                mem_request_mib: mem_mib,
                cpu_limit_m: None,
                mem_limit_mib: Some(mem_mib * 2),
            },
            usage: Some(usage),
            restarts: 0,
            oom_killed: false,
        }],
    }
}
