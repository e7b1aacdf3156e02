//! Reading one region of a customer account: EKS clusters and node groups, and the EC2
//! instances that are their nodes. Every list call is followed to its last page.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{Filter, InstanceLifecycleType};
use aws_sdk_eks::types::CapacityTypes;
use spotwise_aws::AwsFailure;
use spotwise_core::domain::CapacityType;

/// API calls made, for the per-run figures.
#[derive(Default)]
pub struct CallCounter(AtomicUsize);

impl CallCounter {
    fn tick(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenCluster {
    pub name: String,
    pub arn: String,
    pub version: Option<String>,
    pub status: String,
    pub nodegroups: Vec<SeenNodegroup>,
    pub instances: Vec<SeenInstance>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenNodegroup {
    pub name: String,
    pub capacity_type: CapacityType,
    pub instance_types: Vec<String>,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_size: i32,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenInstance {
    pub instance_id: String,
    /// The Kubernetes node name: the private DNS name on EKS.
    pub node_name: String,
    pub instance_type: String,
    pub zone: String,
    pub zone_id: Option<String>,
    pub capacity_type: CapacityType,
    pub labels: BTreeMap<String, String>,
}

/// Tags copied onto the node record as labels, for grouping before the agent reports.
const TAG_LABELS: [&str; 3] = [
    "karpenter.sh/nodepool",
    "eks:nodegroup-name",
    "karpenter.sh/capacity-type",
];

pub async fn region(
    config: &SdkConfig,
    calls: &CallCounter,
) -> Result<Vec<SeenCluster>, AwsFailure> {
    let eks = aws_sdk_eks::Client::new(config);
    let ec2 = aws_sdk_ec2::Client::new(config);

    calls.tick();
    let zones = ec2
        .describe_availability_zones()
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("ec2:DescribeAvailabilityZones", e))?;
    let zone_ids: HashMap<String, String> = zones
        .availability_zones()
        .iter()
        .filter_map(|z| Some((z.zone_name()?.to_owned(), z.zone_id()?.to_owned())))
        .collect();

    let mut names = Vec::new();
    let mut pages = eks.list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        calls.tick();
        names.extend(
            page.map_err(|e| AwsFailure::from_sdk("eks:ListClusters", e))?
                .clusters()
                .iter()
                .cloned(),
        );
    }

    let mut clusters = Vec::with_capacity(names.len());
    for name in names {
        calls.tick();
        let described = eks
            .describe_cluster()
            .name(&name)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("eks:DescribeCluster", e))?;
        let Some(cluster) = described.cluster() else {
            continue;
        };
        clusters.push(SeenCluster {
            arn: cluster.arn().unwrap_or_default().to_owned(),
            version: cluster.version().map(str::to_owned),
            status: cluster
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            nodegroups: nodegroups(&eks, &name, calls).await?,
            instances: instances(&ec2, &name, &zone_ids, calls).await?,
            name,
        });
    }
    Ok(clusters)
}

async fn nodegroups(
    eks: &aws_sdk_eks::Client,
    cluster: &str,
    calls: &CallCounter,
) -> Result<Vec<SeenNodegroup>, AwsFailure> {
    let mut names = Vec::new();
    let mut pages = eks
        .list_nodegroups()
        .cluster_name(cluster)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        calls.tick();
        names.extend(
            page.map_err(|e| AwsFailure::from_sdk("eks:ListNodegroups", e))?
                .nodegroups()
                .iter()
                .cloned(),
        );
    }
    let mut groups = Vec::with_capacity(names.len());
    for name in names {
        calls.tick();
        let out = eks
            .describe_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(&name)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("eks:DescribeNodegroup", e))?;
        let Some(group) = out.nodegroup() else {
            continue;
        };
        let scaling = group.scaling_config();
        groups.push(SeenNodegroup {
            capacity_type: if group.capacity_type() == Some(&CapacityTypes::Spot) {
                CapacityType::Spot
            } else {
                CapacityType::OnDemand
            },
            instance_types: group.instance_types().to_vec(),
            min_size: scaling.and_then(|s| s.min_size()).unwrap_or(0),
            max_size: scaling.and_then(|s| s.max_size()).unwrap_or(0),
            desired_size: scaling.and_then(|s| s.desired_size()).unwrap_or(0),
            status: group
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            name,
        });
    }
    Ok(groups)
}

/// Running and pending instances tagged as the cluster's nodes. Managed node groups and
/// Karpenter tag `eks:cluster-name`; self-managed nodes carry `kubernetes.io/cluster/<name>`.
/// EC2 ANDs filters, so each tag is its own query, merged by instance id.
async fn instances(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
    zone_ids: &HashMap<String, String>,
    calls: &CallCounter,
) -> Result<Vec<SeenInstance>, AwsFailure> {
    let by_tag = [
        Filter::builder()
            .name("tag:eks:cluster-name")
            .values(cluster)
            .build(),
        Filter::builder()
            .name("tag-key")
            .values(format!("kubernetes.io/cluster/{cluster}"))
            .build(),
    ];
    let mut seen: BTreeMap<String, SeenInstance> = BTreeMap::new();
    for tag_filter in by_tag {
        let mut pages = ec2
            .describe_instances()
            .filters(tag_filter)
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            calls.tick();
            let page = page.map_err(|e| AwsFailure::from_sdk("ec2:DescribeInstances", e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(instance_id) = instance.instance_id() else {
                    continue;
                };
                let tags: HashMap<&str, &str> = instance
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?, t.value()?)))
                    .collect();
                let zone = instance
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_owned();
                let zone_id = instance
                    .placement()
                    .and_then(|p| p.availability_zone_id())
                    .map(str::to_owned)
                    .or_else(|| zone_ids.get(&zone).cloned());
                let spot = instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot)
                    || tags.get("karpenter.sh/capacity-type") == Some(&"spot");
                let node_name = instance
                    .private_dns_name()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(instance_id)
                    .to_owned();
                seen.insert(
                    instance_id.to_owned(),
                    SeenInstance {
                        instance_id: instance_id.to_owned(),
                        node_name,
                        instance_type: instance
                            .instance_type()
                            .map(|t| t.as_str().to_owned())
                            .unwrap_or_default(),
                        zone,
                        zone_id,
                        capacity_type: if spot {
                            CapacityType::Spot
                        } else {
                            CapacityType::OnDemand
                        },
                        labels: TAG_LABELS
                            .iter()
                            .filter_map(|k| tags.get(k).map(|v| ((*k).to_owned(), (*v).to_owned())))
                            .collect(),
                    },
                );
            }
        }
    }
    Ok(seen.into_values().collect())
}
