//! Turning a verified action into Kubernetes API calls.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;
use spotwise_core::action::{
    ActionSpec, AgentAction, Amendment, DrainTerms, ScalableKind, WorkloadRef,
};
use spotwise_core::domain::Taint;
use spotwise_core::karpenter::{MANAGED_LABEL, NodePoolSpec, NodeReservation};
use spotwise_core::rightsizing::{ContainerResources, ControllerRef, MAX_PATCH_CONTAINERS};
use tokio::sync::watch;

use crate::report::{Reporter, StatusCheck};

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("drain incomplete at the deadline: {detail}")]
    DrainIncomplete {
        detail: String,
        /// Pods still on the node, with the last reason each could not be evicted.
        pods_left: BTreeMap<String, String>,
    },
    #[error("completing the Auto Scaling lifecycle action: {0}")]
    Lifecycle(String),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "NodePool {name} exists and is not Spotwise's (no {MANAGED_LABEL}=true label); it is left as it is"
    )]
    NotOurs { name: String },
    #[error("EC2NodeClass {name} does not exist; a NodePool that names it could launch nothing")]
    NodeClassMissing { name: String },
    #[error("NodePool {name} cannot be written: {reason}")]
    Manifest { name: String, reason: String },
    #[error("reservation for NodePool {name}: {reason}")]
    Reservation { name: String, reason: String },
    #[error("resources of {workload}: {reason}")]
    Resources { workload: String, reason: String },
}

impl ExecuteError {
    /// API errors that a later attempt can get past: conflicts, throttling, server trouble,
    /// connectivity. 4xx other than those mean the request itself is wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecuteError::Kube(kube::Error::Api(status)) => {
                status.code == 409 || status.code == 429 || status.code >= 500
            }
            ExecuteError::Kube(_) | ExecuteError::Lifecycle(_) => true,
            ExecuteError::NotOurs { .. }
            | ExecuteError::NodeClassMissing { .. }
            | ExecuteError::Manifest { .. }
            | ExecuteError::Reservation { .. }
            | ExecuteError::Resources { .. } => false,
            // The deadline has passed; a retry would be refused as expired.
            ExecuteError::DrainIncomplete { .. } => false,
        }
    }
}

/// What an executed action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub detail: String,
    /// For a scale: the replica count it replaced, so whoever scaled down can restore it.
    pub previous_replicas: Option<i32>,
}

impl From<String> for Executed {
    fn from(detail: String) -> Self {
        Self {
            detail,
            previous_replicas: None,
        }
    }
}

/// Where a drain learns what later signals about its node added to it: the amendment the
/// platform held when the drain started, and the platform itself, asked every `poll_every`.
pub struct Amendments<'a> {
    pub initial: Option<Amendment>,
    pub reporter: Option<&'a Reporter>,
    pub poll_every: Duration,
}

impl Amendments<'_> {
    /// The platform's current amendment, when it answers.
    async fn fetch(&self, action_id: &str) -> Option<Amendment> {
        match self.reporter?.action_status(action_id).await {
            StatusCheck::Known(state) => state.amendment,
            StatusCheck::Refused(_) | StatusCheck::Unreachable(_) => None,
        }
    }

    /// Applies amendments to `terms` as they come, until dropped.
    async fn follow(&self, action_id: &str, terms: &watch::Sender<DrainTerms>) {
        if self.reporter.is_none() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(self.poll_every).await;
            if let Some(amendment) = self.fetch(action_id).await {
                terms.send_if_modified(|t| {
                    let before = t.clone();
                    t.amend(&amendment);
                    *t != before
                });
            }
        }
    }
}

pub async fn run(
    client: &kube::Client,
    autoscaling: Option<&aws_sdk_autoscaling::Client>,
    action: &AgentAction,
    amendments: Amendments<'_>,
) -> Result<Executed, ExecuteError> {
    let params = PatchParams::default();
    match &action.spec {
        ActionSpec::Cordon { node } | ActionSpec::Uncordon { node } => {
            let unschedulable = matches!(action.spec, ActionSpec::Cordon { .. });
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .patch(
                    node,
                    &params,
                    &Patch::Merge(json!({ "spec": { "unschedulable": unschedulable } })),
                )
                .await?;
            Ok(format!("node {node} unschedulable={unschedulable}").into())
        }
        ActionSpec::Label { node, labels } => {
            let nodes: Api<Node> = Api::all(client.clone());
            let labels = json!(labels);
            nodes
                .patch(
                    node,
                    &params,
                    &Patch::Merge(json!({ "metadata": { "labels": labels } })),
                )
                .await?;
            Ok(format!("node {node} labels {labels}").into())
        }
        ActionSpec::Taint { node, taint } => {
            add_taint(client, node, taint).await.map(Executed::from)
        }
        ActionSpec::Scale { workload, replicas } => {
            let WorkloadRef {
                namespace,
                kind,
                name,
            } = workload;
            let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
            // The previous count goes into the result, so whoever scaled down can restore it.
            let previous = match kind {
                ScalableKind::Deployment => {
                    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
                    let scale = api.get_scale(name).await?;
                    api.patch_scale(name, &params, &patch).await?;
                    scale
                }
                ScalableKind::StatefulSet => {
                    let api = Api::<StatefulSet>::namespaced(client.clone(), namespace);
                    let scale = api.get_scale(name).await?;
                    api.patch_scale(name, &params, &patch).await?;
                    scale
                }
            };
            let previous = previous.spec.and_then(|s| s.replicas).unwrap_or(0);
            Ok(Executed {
                detail: format!("{kind} {namespace}/{name} scaled from {previous} to {replicas}"),
                previous_replicas: Some(previous),
            })
        }
        ActionSpec::ApplyNodePool { node_pool } => {
            apply_node_pool(client, node_pool).await.map(Executed::from)
        }
        ActionSpec::DeleteNodePool { name } => {
            delete_node_pool(client, name).await.map(Executed::from)
        }
        ActionSpec::ReserveNodes { reservation } => {
            reserve_nodes(client, reservation).await.map(Executed::from)
        }
        ActionSpec::ReleaseNodes { reservation } => {
            release_nodes(client, reservation).await.map(Executed::from)
        }
        ActionSpec::SetResources {
            workload,
            containers,
        } => set_resources(client, workload, containers)
            .await
            .map(Executed::from),
        ActionSpec::Drain { node, taint, .. } => {
            if let Some(taint) = taint {
                add_taint(client, node, taint).await?;
            }
            let mut start = DrainTerms::of(action);
            if let Some(amendment) = &amendments.initial {
                start.amend(amendment);
            }
            let (terms, watching) = watch::channel(start);
            let drained = tokio::select! {
                drained = crate::drain::drain(client, node, watching.clone()) => drained,
                () = amendments.follow(&action.action_id, &terms) => unreachable!("following never ends"),
                () = crate::lifecycle::keep_alive(autoscaling, &watching) => unreachable!("heartbeats never end"),
            };
            let report = drained?;
            // A hook that arrived in the last moments of the drain is still completed.
            if let Some(amendment) = amendments.fetch(&action.action_id).await {
                terms.send_modify(|t| t.amend(&amendment));
            }
            let hook = terms.borrow().lifecycle_hook.clone();
            let mut detail = report.summary(node);
            // The instance goes either way; completing the hook lets it go now.
            match (hook, autoscaling) {
                (Some(hook), Some(asg)) => {
                    crate::lifecycle::complete(asg, &hook).await?;
                    detail.push_str("; lifecycle action completed (CONTINUE)");
                }
                (Some(_), None) => {
                    detail.push_str("; no Auto Scaling access: the hook ends at its timeout")
                }
                (None, _) => {}
            }
            if report.left.is_empty() {
                Ok(detail.into())
            } else {
                Err(ExecuteError::DrainIncomplete {
                    detail,
                    pods_left: report.left,
                })
            }
        }
    }
}

/// A resource quantity as Kubernetes writes it.
fn cpu_quantity(millis: u64) -> String {
    format!("{millis}m")
}

fn mem_quantity(mib: u64) -> String {
    format!("{mib}Mi")
}

/// Sets the containers' requests (and the limits given) in the controller's pod template with
/// a strategic merge patch, which matches containers by name and leaves everything else as it
/// is; the controller then replaces its pods as its update strategy says.
async fn set_resources(
    client: &kube::Client,
    workload: &ControllerRef,
    containers: &[ContainerResources],
) -> Result<String, ExecuteError> {
    let refuse = |reason: String| ExecuteError::Resources {
        workload: workload.to_string(),
        reason,
    };
    if containers.is_empty() || containers.len() > MAX_PATCH_CONTAINERS {
        return Err(refuse(format!(
            "a patch sets 1 to {MAX_PATCH_CONTAINERS} containers, not {}",
            containers.len()
        )));
    }
    if let Some(c) = containers.iter().find(|c| {
        !spotwise_core::ids::is_dns_label(&c.name)
            || c.cpu_request_m == 0
            || c.mem_request_mib == 0
            || c.cpu_limit_m.is_some_and(|l| l < c.cpu_request_m)
            || c.mem_limit_mib.is_some_and(|l| l < c.mem_request_mib)
    }) {
        return Err(refuse(format!(
            "container {:?}: needs a container name, non-zero requests and limits no lower than them",
            c.name
        )));
    }
    let gvk = GroupVersionKind::gvk("apps", "v1", workload.kind.as_str());
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &workload.namespace,
        &ApiResource::from_gvk_with_plural(&gvk, workload.kind.plural()),
    );
    let current = api.get(&workload.name).await?;
    let template = current.data["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut changes = Vec::new();
    let mut patched = Vec::new();
    for c in containers {
        let Some(existing) = template.iter().find(|t| t["name"] == c.name.as_str()) else {
            return Err(refuse(format!(
                "its pod template has no container {}",
                c.name
            )));
        };
        let mut resources = json!({"requests": {
            "cpu": cpu_quantity(c.cpu_request_m),
            "memory": mem_quantity(c.mem_request_mib),
        }});
        if let Some(limit) = c.cpu_limit_m {
            resources["limits"]["cpu"] = json!(cpu_quantity(limit));
        }
        if let Some(limit) = c.mem_limit_mib {
            resources["limits"]["memory"] = json!(mem_quantity(limit));
        }
        let requests = &existing["resources"]["requests"];
        changes.push(format!(
            "{}: cpu {} -> {}, memory {} -> {}",
            c.name,
            requests["cpu"].as_str().unwrap_or("unset"),
            cpu_quantity(c.cpu_request_m),
            requests["memory"].as_str().unwrap_or("unset"),
            mem_quantity(c.mem_request_mib),
        ));
        patched.push(json!({"name": c.name, "resources": resources}));
    }
    let patch = json!({"spec": {"template": {"spec": {"containers": patched}}}});
    api.patch(
        &workload.name,
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await?;
    Ok(format!(
        "{} {}/{} requests set ({}); its pods roll as its update strategy says",
        workload.kind.as_str(),
        workload.namespace,
        workload.name,
        changes.join("; ")
    ))
}

fn node_pools(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("karpenter.sh", "v1", "NodePool");
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "nodepools"),
    )
}

fn is_ours(pool: &DynamicObject) -> bool {
    pool.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_LABEL))
        .is_some_and(|v| v == "true")
}

/// Creates the NodePool, or brings Spotwise's own one of that name to `spec`; a NodePool of
/// that name that is not Spotwise's is never touched.
async fn apply_node_pool(
    client: &kube::Client,
    spec: &NodePoolSpec,
) -> Result<String, ExecuteError> {
    let name = spec.name.clone();
    if spec.node_class.kind == "EC2NodeClass" {
        let gvk = GroupVersionKind::gvk("karpenter.k8s.aws", "v1", "EC2NodeClass");
        let classes: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, "ec2nodeclasses"),
        );
        if classes.get_opt(&spec.node_class.name).await?.is_none() {
            return Err(ExecuteError::NodeClassMissing {
                name: spec.node_class.name.clone(),
            });
        }
    }
    let pools = node_pools(client);
    let mut manifest = spec.manifest();
    match pools.get_opt(&name).await? {
        None => {
            let pool: DynamicObject =
                serde_json::from_value(manifest).map_err(|e| ExecuteError::Manifest {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            pools.create(&PostParams::default(), &pool).await?;
            Ok(format!("NodePool {name} created"))
        }
        Some(existing) if is_ours(&existing) => {
            // Sending the resource version makes a concurrent change a 409, retried later.
            manifest["metadata"]["resourceVersion"] = json!(existing.metadata.resource_version);
            pools
                .patch(&name, &PatchParams::default(), &Patch::Merge(manifest))
                .await?;
            Ok(format!("NodePool {name} updated"))
        }
        Some(_) => Err(ExecuteError::NotOurs { name }),
    }
}

/// Deletes Spotwise's NodePool (Karpenter drains and removes its nodes); one that is gone
/// already counts as deleted.
async fn delete_node_pool(client: &kube::Client, name: &str) -> Result<String, ExecuteError> {
    let pools = node_pools(client);
    match pools.get_opt(name).await? {
        None => Ok(format!("NodePool {name} already gone")),
        Some(existing) if is_ours(&existing) => {
            pools.delete(name, &DeleteParams::default()).await?;
            Ok(format!("NodePool {name} deleted"))
        }
        Some(_) => Err(ExecuteError::NotOurs {
            name: name.to_owned(),
        }),
    }
}

fn invalid_reservation(reservation: &NodeReservation, reason: String) -> ExecuteError {
    ExecuteError::Reservation {
        name: reservation.node_pool.clone(),
        reason,
    }
}

/// Where the reservation's placeholders live, once it is checked: the agent's own namespace.
fn placeholder_pods(
    client: &kube::Client,
    reservation: &NodeReservation,
) -> Result<Api<Pod>, ExecuteError> {
    reservation
        .check()
        .map_err(|reason| invalid_reservation(reservation, reason))?;
    Ok(Api::default_namespaced(client.clone()))
}

/// Creates the reservation's placeholder pods in the agent's own namespace; pods already
/// there (a repeated action) are kept.
async fn reserve_nodes(
    client: &kube::Client,
    reservation: &NodeReservation,
) -> Result<String, ExecuteError> {
    let pods = placeholder_pods(client, reservation)?;
    let mut created = 0;
    for index in 0..reservation.placeholders() {
        let pod: Pod = serde_json::from_value(reservation.pod(index))
            .map_err(|e| invalid_reservation(reservation, e.to_string()))?;
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => created += 1,
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(format!(
        "{} node(s) of NodePool {} reserved in namespace {} ({created} placeholder pod(s) created)",
        reservation.nodes,
        reservation.node_pool,
        client.default_namespace()
    ))
}

/// Deletes the placeholder pods the reservation still has (preempted ones are gone).
async fn release_nodes(
    client: &kube::Client,
    reservation: &NodeReservation,
) -> Result<String, ExecuteError> {
    let pods = placeholder_pods(client, reservation)?;
    let mut deleted = 0;
    for index in 0..reservation.placeholders() {
        match pods
            .delete(&reservation.pod_name(index), &DeleteParams::default())
            .await
        {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(format!(
        "reserved nodes of NodePool {} released ({deleted} placeholder pod(s) deleted)",
        reservation.node_pool
    ))
}

async fn add_taint(
    client: &kube::Client,
    name: &str,
    taint: &Taint,
) -> Result<String, ExecuteError> {
    let taint = k8s_openapi::api::core::v1::Taint {
        key: taint.key.clone(),
        value: taint.value.clone(),
        effect: taint.effect.clone(),
        time_added: None,
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(name).await?;
    let mut taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    if taints
        .iter()
        .any(|t| t.key == taint.key && t.effect == taint.effect)
    {
        return Ok(format!(
            "node {name} already has taint {}:{}",
            taint.key, taint.effect
        ));
    }
    taints.push(taint.clone());
    // Sending the resource version makes a concurrent taint change a 409, retried later.
    let patch = json!({
        "metadata": { "resourceVersion": node.metadata.resource_version },
        "spec": { "taints": taints },
    });
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(format!(
        "node {name} tainted {}:{}",
        taint.key, taint.effect
    ))
}
