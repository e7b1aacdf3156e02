//! The simulated cloud under the simulated cluster: EKS managed node groups (in the emulator)
//! backed by Auto Scaling groups and EC2 instances (in the emulator) whose kubelets register
//! as nodes in the simulated Kubernetes API.
//!
//! [`SimCloud::reconcile`] does what EKS and Auto Scaling do between two looks: a group whose
//! desired size changed gets instances launched (the first of its types with capacity, in its
//! emptiest zone) or terminated; a group Spotwise shrank through Auto Scaling
//! (`TerminateInstanceInAutoScalingGroup`) has its desired size follow; a deleted group's
//! instances go. A launched instance carries EKS's tags, so discovery and the interruption
//! index see it; its node carries the group's labels and taints, a `providerID` and a Ready
//! condition, and a DaemonSet pod. Pools listed in `no_spot_capacity` launch nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{Filter, Placement, ResourceType, Tag, TagSpecification};
use aws_sdk_eks::types::{CapacityTypes, NodegroupScalingConfig};
use serde_json::{Value, json};
use spotwise_core::domain::InstanceType;
use spotwise_testkit::kube::{KubeState, node, pod};

/// The launch template every simulated Auto Scaling group names (instances are launched by
/// the simulation itself and attached).
const TEMPLATE: &str = "spotwise-sim-node";

pub struct SimCloud {
    eks: aws_sdk_eks::Client,
    ec2: aws_sdk_ec2::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    cluster: String,
    kube: Arc<Mutex<KubeState>>,
    catalogue: BTreeMap<String, InstanceType>,
    /// Spot pools, (instance type, zone), that have no capacity.
    pub no_spot_capacity: BTreeSet<(String, String)>,
    /// On-demand pools, (instance type, zone), that have no capacity.
    pub no_on_demand_capacity: BTreeSet<(String, String)>,
    /// Each group's desired size as last reconciled.
    synced: HashMap<String, i32>,
    /// Instances launched and terminated by the simulation.
    pub launched: u32,
    pub terminated: u32,
}

impl SimCloud {
    pub async fn new(
        customer: &aws_config::SdkConfig,
        cluster: &str,
        kube: Arc<Mutex<KubeState>>,
        catalogue: BTreeMap<String, InstanceType>,
    ) -> anyhow::Result<Self> {
        let ec2 = aws_sdk_ec2::Client::new(customer);
        let exists = ec2
            .describe_launch_templates()
            .launch_template_names(TEMPLATE)
            .send()
            .await
            .is_ok_and(|t| !t.launch_templates().is_empty());
        if !exists {
            ec2.create_launch_template()
                .launch_template_name(TEMPLATE)
                .launch_template_data(
                    aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                        .image_id("ami-12c6146b")
                        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
                        .build(),
                )
                .send()
                .await?;
        }
        Ok(Self {
            eks: aws_sdk_eks::Client::new(customer),
            autoscaling: aws_sdk_autoscaling::Client::new(customer),
            ec2,
            cluster: cluster.to_owned(),
            kube,
            catalogue,
            no_spot_capacity: BTreeSet::new(),
            no_on_demand_capacity: BTreeSet::new(),
            synced: HashMap::new(),
            launched: 0,
            terminated: 0,
        })
    }

    fn kube(&self) -> std::sync::MutexGuard<'_, KubeState> {
        self.kube.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One pass of EKS and Auto Scaling: every group brought to its desired size, nodes of
    /// terminated instances and deleted groups removed.
    pub async fn reconcile(&mut self) -> anyhow::Result<()> {
        let groups: Vec<String> = self
            .eks
            .list_nodegroups()
            .cluster_name(&self.cluster)
            .send()
            .await?
            .nodegroups()
            .to_vec();
        let running = self.instances().await?;
        for group in &groups {
            let members: Vec<(String, String, String)> = running
                .iter()
                .filter(|(_, g, _)| g == group)
                .cloned()
                .collect();
            self.reconcile_group(group, members).await?;
        }
        // Instances of deleted groups go with them.
        let orphans: Vec<String> = running
            .iter()
            .filter(|(_, group, _)| !groups.contains(group))
            .map(|(id, _, _)| id.clone())
            .collect();
        if !orphans.is_empty() {
            self.terminated += u32::try_from(orphans.len()).unwrap_or(0);
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(orphans))
                .send()
                .await?;
        }
        // Nodes whose instance no longer runs leave the cluster.
        let live: BTreeSet<String> = self
            .instances()
            .await?
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        let gone: Vec<String> = self
            .kube()
            .nodes
            .iter()
            .filter(|(_, n)| {
                n["spec"]["providerID"]
                    .as_str()
                    .and_then(|p| p.rsplit('/').next())
                    .is_some_and(|id| !live.contains(id))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut kube = self.kube();
        for name in gone {
            kube.remove_node(&name);
        }
        kube.schedule();
        Ok(())
    }

    /// Running instances of the cluster: (id, node group, zone).
    async fn instances(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:eks:cluster-name")
                    .values(&self.cluster)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .values("pending")
                    .build(),
            )
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            for instance in page?.reservations().iter().flat_map(|r| r.instances()) {
                let tag = |key: &str| {
                    instance
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                        .map(str::to_owned)
                };
                found.push((
                    instance.instance_id().unwrap_or_default().to_owned(),
                    tag("eks:nodegroup-name").unwrap_or_default(),
                    instance
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
        }
        Ok(found)
    }

    async fn reconcile_group(
        &mut self,
        group: &str,
        mut members: Vec<(String, String, String)>,
    ) -> anyhow::Result<()> {
        let described = self
            .eks
            .describe_nodegroup()
            .cluster_name(&self.cluster)
            .nodegroup_name(group)
            .send()
            .await?;
        let ng = described.nodegroup().context("nodegroup")?;
        let asg = ng
            .resources()
            .and_then(|r| r.auto_scaling_groups().first())
            .and_then(|a| a.name())
            .context("the node group names no Auto Scaling group")?
            .to_owned();
        let eks_desired = ng
            .scaling_config()
            .and_then(NodegroupScalingConfig::desired_size)
            .unwrap_or(0);
        let subnets = ng.subnets().to_vec();
        // (zone, subnet)
        let zone_subnets: Vec<(String, String)> = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(subnets.clone()))
            .send()
            .await?
            .subnets()
            .iter()
            .filter_map(|s| Some((s.availability_zone()?.to_owned(), s.subnet_id()?.to_owned())))
            .collect();
        let zones: Vec<String> = zone_subnets.iter().map(|(z, _)| z.clone()).collect();
        let spot = ng.capacity_type() == Some(&CapacityTypes::Spot);
        let types = ng.instance_types().to_vec();
        let labels = ng.labels().cloned().unwrap_or_default();
        let taints: Vec<Value> = ng
            .taints()
            .iter()
            .map(|t| {
                let effect = match t.effect().map(|e| e.as_str()) {
                    Some("NO_EXECUTE") => "NoExecute",
                    Some("PREFER_NO_SCHEDULE") => "PreferNoSchedule",
                    _ => "NoSchedule",
                };
                json!({"key": t.key(), "value": t.value(), "effect": effect})
            })
            .collect();

        let found = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&asg)
            .send()
            .await?;
        let asg_desired = match found.auto_scaling_groups().first() {
            Some(existing) => existing.desired_capacity().unwrap_or(0),
            None => {
                self.autoscaling
                    .create_auto_scaling_group()
                    .auto_scaling_group_name(&asg)
                    .launch_template(
                        LaunchTemplateSpecification::builder()
                            .launch_template_name(TEMPLATE)
                            .build(),
                    )
                    .min_size(0)
                    .max_size(10_000)
                    .desired_capacity(0)
                    .vpc_zone_identifier(subnets.join(","))
                    .send()
                    .await?;
                if !members.is_empty() {
                    let ids: Vec<String> = members.iter().map(|(id, ..)| id.clone()).collect();
                    self.autoscaling
                        .attach_instances()
                        .auto_scaling_group_name(&asg)
                        .set_instance_ids(Some(ids))
                        .send()
                        .await?;
                }
                i32::try_from(members.len()).unwrap_or(0)
            }
        };
        let synced = self.synced.get(group).copied().unwrap_or(asg_desired);
        // EKS asked for a size, or Auto Scaling changed (an instance terminated with
        // decrement) and the node group's size follows it.
        let target = if eks_desired != synced {
            eks_desired
        } else if asg_desired != eks_desired {
            let min = ng
                .scaling_config()
                .and_then(NodegroupScalingConfig::min_size)
                .unwrap_or(0)
                .min(asg_desired);
            self.eks
                .update_nodegroup_config()
                .cluster_name(&self.cluster)
                .nodegroup_name(group)
                .scaling_config(
                    NodegroupScalingConfig::builder()
                        .min_size(min)
                        .desired_size(asg_desired)
                        .max_size(
                            ng.scaling_config()
                                .and_then(NodegroupScalingConfig::max_size)
                                .unwrap_or(1)
                                .max(1),
                        )
                        .build(),
                )
                .send()
                .await?;
            asg_desired
        } else {
            eks_desired
        };
        let have = i32::try_from(members.len()).unwrap_or(0);
        for _ in have..target {
            let Some((instance_type, zone)) = self.capacity(&types, &zones, &members, spot) else {
                break;
            };
            let subnet = zone_subnets
                .iter()
                .find(|(z, _)| *z == zone)
                .map(|(_, subnet)| subnet.clone())
                .context("no subnet in the zone")?;
            let launched = self
                .launch(
                    group,
                    &asg,
                    &instance_type,
                    &zone,
                    &subnet,
                    spot,
                    &labels,
                    &taints,
                )
                .await?;
            members.push((launched, group.to_owned(), zone));
        }
        if have > target {
            let excess = usize::try_from(have - target).unwrap_or(0);
            let going: Vec<String> = members
                .iter()
                .rev()
                .take(excess)
                .map(|(id, ..)| id.clone())
                .collect();
            self.autoscaling
                .detach_instances()
                .auto_scaling_group_name(&asg)
                .set_instance_ids(Some(going.clone()))
                .should_decrement_desired_capacity(true)
                .send()
                .await?;
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(going))
                .send()
                .await?;
            self.terminated += u32::try_from(excess).unwrap_or(0);
        }
        self.synced.insert(group.to_owned(), target);
        Ok(())
    }

    /// The first of `types` with capacity, in the zone where the group has fewest instances.
    fn capacity(
        &self,
        types: &[String],
        zones: &[String],
        members: &[(String, String, String)],
        spot: bool,
    ) -> Option<(String, String)> {
        let mut by_load: Vec<&String> = zones.iter().collect();
        by_load.sort_by_key(|z| {
            (
                members.iter().filter(|(_, _, mz)| mz == *z).count(),
                (*z).clone(),
            )
        });
        for instance_type in types {
            for zone in &by_load {
                let pools = if spot {
                    &self.no_spot_capacity
                } else {
                    &self.no_on_demand_capacity
                };
                if pools.contains(&(instance_type.clone(), (*zone).clone())) {
                    continue;
                }
                return Some((instance_type.clone(), (*zone).clone()));
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &mut self,
        group: &str,
        asg: &str,
        instance_type: &str,
        zone: &str,
        subnet: &str,
        spot: bool,
        labels: &HashMap<String, String>,
        taints: &[Value],
    ) -> anyhow::Result<String> {
        let mut tags = TagSpecification::builder().resource_type(ResourceType::Instance);
        let owned = format!("kubernetes.io/cluster/{}", self.cluster);
        for (key, value) in [
            ("eks:cluster-name", self.cluster.as_str()),
            ("eks:nodegroup-name", group),
            (owned.as_str(), "owned"),
        ] {
            tags = tags.tags(Tag::builder().key(key).value(value).build());
        }
        let mut request = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(instance_type.into())
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .placement(Placement::builder().availability_zone(zone).build())
            .tag_specifications(tags.build());
        if spot {
            request = request.instance_market_options(
                aws_sdk_ec2::types::InstanceMarketOptionsRequest::builder()
                    .market_type(aws_sdk_ec2::types::MarketType::Spot)
                    .build(),
            );
        }
        let launched = request.send().await?;
        let instance = launched.instances().first().context("no instance")?;
        let id = instance.instance_id().context("instance id")?.to_owned();
        let name = instance
            .private_dns_name()
            .context("private DNS name")?
            .to_owned();
        self.autoscaling
            .attach_instances()
            .auto_scaling_group_name(asg)
            .instance_ids(&id)
            .send()
            .await?;
        self.launched += 1;
        let spec = self
            .catalogue
            .get(instance_type)
            .with_context(|| format!("{instance_type} is not in the catalogue"))?;
        let (cpu_m, mem_mib) = spotwise_optimizer::catalog::allocatable(spec);
        let mut extra = json!({
            "eks.amazonaws.com/nodegroup": group,
            "eks.amazonaws.com/capacityType": if spot { "SPOT" } else { "ON_DEMAND" },
        });
        for (key, value) in labels {
            extra[key] = json!(value);
        }
        let mut registered = node(
            &name,
            &id,
            instance_type,
            zone,
            if spot { "spot" } else { "on-demand" },
            (
                &format!("{cpu_m}m"),
                &format!("{mem_mib}Mi"),
                &spec.max_pods.to_string(),
            ),
            extra,
        );
        registered["spec"]["taints"] = json!(taints);
        registered["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        let (key, daemon) = pod(
            "kube-system",
            &format!("aws-node-{}", &id[id.len().saturating_sub(5)..]),
            &name,
            "DaemonSet",
            json!({"spec": {"containers": [{"name": "main", "image": "registry.example/app:1",
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}}]}}),
        );
        let mut kube = self.kube();
        kube.add_node(registered);
        kube.pods.insert(key, daemon);
        Ok(id)
    }
}
