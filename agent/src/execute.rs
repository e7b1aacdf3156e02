//! Turning a verified action into Kubernetes API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use spotwise_core::action::{ActionKind, ActionTarget, AgentAction};

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("{0:?} actions are not supported by this agent")]
    Unsupported(ActionKind),
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
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
            ExecuteError::Unsupported(_)
            | ExecuteError::InvalidParams(_)
            | ExecuteError::DrainIncomplete { .. } => false,
        }
    }
}

fn node_name(action: &AgentAction) -> Result<&str, ExecuteError> {
    match &action.target {
        ActionTarget::Node { name } => Ok(name),
        ActionTarget::Workload { .. } => Err(ExecuteError::InvalidParams(format!(
            "{:?} needs a node target",
            action.kind
        ))),
    }
}

fn string_map(
    action: &AgentAction,
    param: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ExecuteError> {
    let value = action
        .params
        .get(param)
        .ok_or_else(|| ExecuteError::InvalidParams(format!("params.{param} is required")))?;
    let map = value
        .as_object()
        .ok_or_else(|| ExecuteError::InvalidParams(format!("params.{param} must be an object")))?;
    if map.values().any(|v| !(v.is_string() || v.is_null())) {
        return Err(ExecuteError::InvalidParams(format!(
            "params.{param} values must be strings (or null to remove)"
        )));
    }
    Ok(map.clone())
}

/// A human-readable account of what the action would change.
pub fn describe(action: &AgentAction) -> String {
    match &action.target {
        ActionTarget::Node { name } => format!("{:?} node {name}", action.kind).to_lowercase(),
        ActionTarget::Workload {
            namespace,
            kind,
            name,
        } => format!(
            "{:?} {kind} {namespace}/{name} {:?}",
            action.kind, action.params
        )
        .to_lowercase(),
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
    match action.kind {
        ActionKind::Cordon | ActionKind::Uncordon => {
            let name = node_name(action)?;
            let unschedulable = action.kind == ActionKind::Cordon;
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .patch(
                    name,
                    &params,
                    &Patch::Merge(json!({ "spec": { "unschedulable": unschedulable } })),
                )
                .await?;
            Ok(format!("node {name} unschedulable={unschedulable}").into())
        }
        ActionKind::Label => {
            let name = node_name(action)?;
            let labels = string_map(action, "labels")?;
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .patch(
                    name,
                    &params,
                    &Patch::Merge(json!({ "metadata": { "labels": labels } })),
                )
                .await?;
            Ok(format!("node {name} labels {}", serde_json::Value::Object(labels)).into())
        }
        ActionKind::Taint => {
            let name = node_name(action)?;
            add_taint(client, name, action).await.map(Executed::from)
        }
        ActionKind::Scale => {
            let ActionTarget::Workload {
                namespace,
                kind,
                name,
            } = &action.target
            else {
                return Err(ExecuteError::InvalidParams(
                    "scale needs a workload target".into(),
                ));
            };
            let replicas = action
                .params
                .get("replicas")
                .and_then(|v| v.as_u64())
                .and_then(|r| i32::try_from(r).ok())
                .ok_or_else(|| {
                    ExecuteError::InvalidParams(
                        "params.replicas must be a non-negative integer".into(),
                    )
                })?;
            let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
            // The previous count goes into the result, so whoever scaled down can restore it.
            let previous = match kind.as_str() {
                "Deployment" => {
                    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
                    let scale = api.get_scale(name).await?;
                    api.patch_scale(name, &params, &patch).await?;
                    scale
                }
                "StatefulSet" => {
                    let api = Api::<StatefulSet>::namespaced(client.clone(), namespace);
                    let scale = api.get_scale(name).await?;
                    api.patch_scale(name, &params, &patch).await?;
                    scale
                }
                other => {
                    return Err(ExecuteError::InvalidParams(format!(
                        "cannot scale a {other}"
                    )));
                }
            };
            let previous = previous.spec.and_then(|s| s.replicas).unwrap_or(0);
            Ok(Executed {
                detail: format!("{kind} {namespace}/{name} scaled from {previous} to {replicas}"),
                previous_replicas: Some(previous),
            })
        }
        ActionKind::Drain => {
            let name = node_name(action)?;
            if action.params.contains_key("taint") {
                add_taint(client, name, action).await?;
            }
            let hook = crate::lifecycle::Hook::from_action(action)?;
            let drained = match (&hook, autoscaling) {
                (Some(hook), Some(asg)) => tokio::select! {
                    drained = crate::drain::drain(client, name, action.not_after) => drained,
                    () = crate::lifecycle::keep_alive(asg, hook) => unreachable!("heartbeats never end"),
                },
                _ => crate::drain::drain(client, name, action.not_after).await,
            };
            let report = drained?;
            let mut detail = report.summary(name);
            // The instance goes either way; completing the hook lets it go now.
            match (&hook, autoscaling) {
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
    action: &AgentAction,
) -> Result<String, ExecuteError> {
    let taint = action
        .params
        .get("taint")
        .cloned()
        .ok_or_else(|| ExecuteError::InvalidParams("params.taint is required".into()))?;
    let taint: k8s_openapi::api::core::v1::Taint = serde_json::from_value(taint)
        .map_err(|e| ExecuteError::InvalidParams(format!("params.taint: {e}")))?;
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
