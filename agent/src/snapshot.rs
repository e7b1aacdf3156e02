//! The cluster as the platform plans and costs it: nodes (instance id, capacity type,
//! allocatable), pods (requests, owners, node, affinity and spread), PodDisruptionBudgets, the
//! claims and volumes that pin pods to zones, HorizontalPodAutoscalers, usage from
//! metrics.k8s.io when a metrics server is installed, and Karpenter's NodePools and
//! EC2NodeClasses when the cluster serves them. Lists are read in pages.

use http::Request;
use serde_json::{Value, json};
use spotwise_core::karpenter::{Karpenter, MAX_NODE_POOLS, parse_node_pool};
use spotwise_core::snapshot::{Snapshot, SnapshotError, parse_list};

/// Items per list request, so a 20,000-pod cluster is read in bounded pieces.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("listing {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Every item of a list, following `continue` tokens; list items carry no `kind`, so it is set.
async fn list_all(
    client: &kube::Client,
    path: &str,
    kind: &'static str,
) -> Result<Vec<Value>, CollectError> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut uri = format!("{path}?limit={PAGE}");
        if let Some(token) = &token {
            uri.push_str("&continue=");
            for byte in token.bytes() {
                if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                    uri.push(char::from(byte));
                } else {
                    uri.push_str(&format!("%{byte:02X}"));
                }
            }
        }
        let request = Request::get(uri)
            .body(Vec::new())
            .map_err(|e| CollectError::Decode {
                what: kind,
                reason: e.to_string(),
            })?;
        let text = client
            .request_text(request)
            .await
            .map_err(|source| CollectError::List { what: kind, source })?;
        let mut page: Value = serde_json::from_str(&text).map_err(|e| CollectError::Decode {
            what: kind,
            reason: e.to_string(),
        })?;
        if let Some(list) = page.get_mut("items").and_then(Value::as_array_mut) {
            for mut item in list.drain(..) {
                item["kind"] = json!(kind);
                items.push(item);
            }
        }
        token = page["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if token.is_none() {
            return Ok(items);
        }
    }
}

pub async fn collect(client: &kube::Client) -> Result<Snapshot, CollectError> {
    let (nodes, pods, pdbs, claims, volumes, usage, hpas, karpenter) = tokio::join!(
        list_all(client, "/api/v1/nodes", "Node"),
        list_all(client, "/api/v1/pods", "Pod"),
        list_all(
            client,
            "/apis/policy/v1/poddisruptionbudgets",
            "PodDisruptionBudget"
        ),
        list_all(
            client,
            "/api/v1/persistentvolumeclaims",
            "PersistentVolumeClaim"
        ),
        list_all(client, "/api/v1/persistentvolumes", "PersistentVolume"),
        list_all(client, "/apis/metrics.k8s.io/v1beta1/pods", "PodMetrics"),
        list_all(
            client,
            "/apis/autoscaling/v2/horizontalpodautoscalers",
            "HorizontalPodAutoscaler"
        ),
        karpenter(client),
    );
    let mut items = nodes?;
    items.extend(pods?);
    items.extend(pdbs?);
    items.extend(claims?);
    items.extend(volumes?);
    match usage {
        Ok(usage) => items.extend(usage),
        // Without a metrics server, requests stand in for usage.
        Err(err) => tracing::debug!(error = %err, "no pod metrics"),
    }
    match hpas {
        Ok(hpas) => items.extend(hpas),
        // Right-sizing then cannot see autoscalers, so it says so rather than guess.
        Err(err) => tracing::warn!(error = %err, "HorizontalPodAutoscalers not listed"),
    }
    let list =
        serde_json::to_vec(&json!({ "items": items })).map_err(|e| CollectError::Decode {
            what: "snapshot",
            reason: e.to_string(),
        })?;
    let mut snapshot = parse_list(&list)?;
    snapshot.karpenter = karpenter;
    Ok(snapshot)
}

/// The cluster's NodePools and EC2NodeClasses, or `None` when it does not serve
/// `karpenter.sh/v1` (Karpenter not installed) or the agent may not read them.
async fn karpenter(client: &kube::Client) -> Option<Karpenter> {
    let (pools, classes) = tokio::join!(
        list_all(client, "/apis/karpenter.sh/v1/nodepools", "NodePool"),
        list_all(
            client,
            "/apis/karpenter.k8s.aws/v1/ec2nodeclasses",
            "EC2NodeClass"
        ),
    );
    let pools = match pools {
        Ok(pools) => pools,
        Err(err) => {
            tracing::debug!(error = %err, "no Karpenter NodePools: Karpenter not installed");
            return None;
        }
    };
    let node_pools = pools
        .iter()
        .take(MAX_NODE_POOLS)
        .filter_map(|item| match parse_node_pool(item) {
            Ok(pool) => Some(pool),
            Err(reason) => {
                tracing::warn!(nodepool = %item["metadata"]["name"], %reason, "NodePool not reported");
                None
            }
        })
        .collect();
    let node_classes = match classes {
        Ok(classes) => classes
            .iter()
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
            .take(MAX_NODE_POOLS)
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "EC2NodeClasses not listed");
            Vec::new()
        }
    };
    Some(Karpenter {
        node_pools,
        node_classes,
    })
}
