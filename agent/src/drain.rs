//! Draining a node through the eviction API, so PodDisruptionBudgets are honoured.
//!
//! The node is cordoned (and tainted when the action asks), then every pod that a drain should
//! move is evicted. An eviction refused with 429 (a PodDisruptionBudget allows no disruption
//! now) is retried with backoff until the action's deadline; pods still there at the deadline
//! are reported with the reason. DaemonSet pods (they would be recreated in place), mirror pods
//! (owned by the kubelet) and finished pods are skipped. Pods with emptyDir volumes are evicted:
//! their scratch data goes with the node anyway. An accepted eviction only starts a pod's
//! shutdown, so the drain then waits, up to the deadline, until the evicted pods are gone: only
//! then may the instance be let go.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;
use spotwise_core::action::DrainTerms;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::execute::ExecuteError;

const PDB_BLOCKED: &str = "eviction blocked by a PodDisruptionBudget";
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);
const GONE_POLL: Duration = Duration::from_secs(1);
const STILL_TERMINATING: &str = "evicted, still terminating at the deadline";
/// Kubernetes' default when a pod sets none.
const DEFAULT_GRACE_SECONDS: i64 = 30;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub evicted: Vec<String>,
    /// Pods a drain leaves alone, with why.
    pub skipped: BTreeMap<String, String>,
    /// Pods still on the node at the deadline, with the last reason.
    pub left: BTreeMap<String, String>,
}

impl DrainReport {
    pub fn summary(&self, node: &str) -> String {
        let mut text = format!(
            "node {node}: {} evicted, {} skipped",
            self.evicted.len(),
            self.skipped.len()
        );
        if !self.left.is_empty() {
            let left: Vec<String> = self
                .left
                .iter()
                .map(|(pod, why)| format!("{pod} ({why})"))
                .collect();
            text.push_str(&format!(", {} left: {}", self.left.len(), left.join(", ")));
        }
        text
    }
}

struct Candidate {
    namespace: String,
    name: String,
    uid: Option<String>,
    grace_seconds: i64,
    /// Selects its nodes (nodeSelector or required node affinity).
    constrained: bool,
    /// The cpu its containers request, in millicores.
    cpu_m: u64,
}

impl Candidate {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why a drain would leave this pod alone, if it would.
fn skip_reason(pod: &Pod) -> Option<&'static str> {
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        return Some("mirror pod");
    }
    if meta
        .owner_references
        .as_ref()
        .is_some_and(|owners| owners.iter().any(|o| o.kind == "DaemonSet"))
    {
        return Some("DaemonSet pod");
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded" | "Failed") => Some("finished"),
        _ => None,
    }
}

/// Drains `node` by the deadline in `terms`, which a later signal may bring forward while the
/// drain runs.
pub async fn drain(
    client: &kube::Client,
    node: &str,
    mut terms: watch::Receiver<DrainTerms>,
) -> Result<DrainReport, ExecuteError> {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "unschedulable": true } })),
        )
        .await?;

    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut report = DrainReport::default();
    let mut pending = Vec::new();
    for pod in pods.items {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some(reason) = skip_reason(&pod) {
            report
                .skipped
                .insert(format!("{namespace}/{name}"), reason.into());
            continue;
        }
        let grace_seconds = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        pending.push(Candidate {
            namespace,
            name,
            uid: pod.metadata.uid.clone(),
            grace_seconds,
            constrained: pod.spec.as_ref().is_some_and(|s| {
                s.node_selector.as_ref().is_some_and(|n| !n.is_empty())
                    || s.affinity
                        .as_ref()
                        .and_then(|a| a.node_affinity.as_ref())
                        .is_some_and(|n| {
                            n.required_during_scheduling_ignored_during_execution
                                .is_some()
                        })
            }),
            cpu_m: pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .filter_map(|q| spotwise_core::snapshot::cpu_millis(&q.0))
                .sum(),
        });
    }
    // Pods that select their nodes go first: they have the fewest places to go, and the room
    // there is not yet taken by pods that could run anywhere. Then the largest, which need the
    // most room, while it is there.
    pending.sort_by_key(|pod| (!pod.constrained, std::cmp::Reverse(pod.cpu_m)));

    let mut wait = FIRST_RETRY;
    let mut last_reason: BTreeMap<String, String> = BTreeMap::new();
    let mut terminating: Vec<Candidate> = Vec::new();
    loop {
        let deadline = terms.borrow_and_update().not_after;
        let remaining = deadline - OffsetDateTime::now_utc();
        if remaining <= time::Duration::ZERO {
            for pod in &pending {
                let reason = last_reason
                    .remove(&pod.id())
                    .unwrap_or_else(|| "deadline reached".into());
                report.left.insert(pod.id(), reason);
            }
            wait_gone(client, node, terminating, &terms, &mut report).await?;
            return Ok(report);
        }
        let mut still = Vec::new();
        for pod in pending {
            // Respect the pod's grace period, but never past the deadline.
            let grace = pod.grace_seconds.clamp(0, remaining.whole_seconds().max(0));
            let params = EvictParams {
                delete_options: Some(DeleteParams {
                    grace_period_seconds: u32::try_from(grace).ok(),
                    ..DeleteParams::default()
                }),
                ..EvictParams::default()
            };
            // kube-client retries 429s itself with long backoffs; the deadline bounds each call.
            let eviction = Api::<Pod>::namespaced(client.clone(), &pod.namespace);
            // A deadline brought forward cuts the attempt short.
            let attempt = tokio::select! {
                attempt = tokio::time::timeout(remaining.unsigned_abs(), eviction.evict(&pod.name, &params)) => attempt,
                _ = terms.changed() => {
                    still.push(pod);
                    continue;
                }
            };
            match attempt {
                Ok(Ok(_)) => {
                    report.evicted.push(pod.id());
                    terminating.push(pod);
                }
                Ok(Err(kube::Error::Api(status))) if status.code == 404 => {
                    report.evicted.push(pod.id())
                }
                Ok(Err(kube::Error::Api(status))) if status.code == 429 => {
                    last_reason.insert(pod.id(), PDB_BLOCKED.into());
                    still.push(pod);
                }
                Ok(Err(kube::Error::Api(status))) if status.code >= 500 || status.code == 409 => {
                    last_reason
                        .insert(pod.id(), format!("API {}: {}", status.code, status.message));
                    still.push(pod);
                }
                Ok(Err(kube::Error::Api(status))) => {
                    report.left.insert(
                        pod.id(),
                        format!("eviction refused ({}): {}", status.code, status.message),
                    );
                }
                Ok(Err(other)) => {
                    last_reason.insert(pod.id(), other.to_string());
                    still.push(pod);
                }
                // Still being retried by the client at the deadline (it retries only 429/503/504).
                Err(_deadline) => {
                    last_reason
                        .entry(pod.id())
                        .or_insert_with(|| PDB_BLOCKED.into());
                    still.push(pod);
                }
            }
        }
        if still.is_empty() {
            wait_gone(client, node, terminating, &terms, &mut report).await?;
            return Ok(report);
        }
        pending = still;
        let remaining =
            (terms.borrow().not_after - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait.min(remaining.unsigned_abs())) => {}
            _ = terms.changed() => {}
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// Waits until the evicted pods have left the node (a pod recreated under the same name has
/// another uid), or the deadline; those still there then are reported as left.
async fn wait_gone(
    client: &kube::Client,
    node: &str,
    mut terminating: Vec<Candidate>,
    terms: &watch::Receiver<DrainTerms>,
    report: &mut DrainReport,
) -> Result<(), ExecuteError> {
    let pods = Api::<Pod>::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    loop {
        if terminating.is_empty() {
            return Ok(());
        }
        let listed = pods.list(&on_node).await?;
        terminating.retain(|pod| {
            listed.items.iter().any(|p| {
                p.metadata.namespace.as_deref().unwrap_or("default") == pod.namespace
                    && p.metadata.name.as_deref() == Some(pod.name.as_str())
                    && (pod.uid.is_none() || p.metadata.uid == pod.uid)
            })
        });
        let remaining = terms.borrow().not_after - OffsetDateTime::now_utc();
        if terminating.is_empty() {
            return Ok(());
        }
        if remaining <= time::Duration::ZERO {
            for pod in terminating {
                report.left.insert(pod.id(), STILL_TERMINATING.into());
            }
            return Ok(());
        }
        tokio::time::sleep(GONE_POLL.min(remaining.unsigned_abs())).await;
    }
}
