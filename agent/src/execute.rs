//! Turning a verified action into Kubernetes API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use spotwise_core::action::{ActionSpec, AgentAction, ScalableKind, WorkloadRef};
use spotwise_core::domain::Taint;

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

pub async fn run(
    client: &kube::Client,
    autoscaling: Option<&aws_sdk_autoscaling::Client>,
    action: &AgentAction,
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
        ActionSpec::Drain {
            node,
            taint,
            lifecycle_hook,
        } => {
            if let Some(taint) = taint {
                add_taint(client, node, taint).await?;
            }
            let drained = match (lifecycle_hook, autoscaling) {
                (Some(hook), Some(asg)) => tokio::select! {
                    drained = crate::drain::drain(client, node, action.not_after) => drained,
                    () = crate::lifecycle::keep_alive(asg, hook) => unreachable!("heartbeats never end"),
                },
                _ => crate::drain::drain(client, node, action.not_after).await,
            };
            let report = drained?;
            let mut detail = report.summary(node);
            // The instance goes either way; completing the hook lets it go now.
            match (lifecycle_hook, autoscaling) {
                (Some(hook), Some(asg)) => {
                    crate::lifecycle::complete(asg, hook).await?;
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
