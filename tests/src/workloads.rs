//! The simulated API's workload controllers, for right-sizing: Deployments, StatefulSets and
//! DaemonSets served and patched (strategic merge of the pod template's containers, by name),
//! each patch rolled out to the controller's pods as its controller would; metrics.k8s.io
//! usage per workload container; HorizontalPodAutoscalers listed.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::kube::{KubeState, Reply, Shared, lock, merge, status};

/// `namespace/Kind/name` of the controller that made `pod` (a ReplicaSet's pods belong to its
/// Deployment), as right-sizing names workloads.
pub fn controller_of(pod: &Value) -> Option<String> {
    let namespace = pod["metadata"]["namespace"].as_str()?;
    let owner = &pod["metadata"]["ownerReferences"][0];
    let (kind, name) = (owner["kind"].as_str()?, owner["name"].as_str()?);
    match (kind, name.rsplit_once('-')) {
        ("ReplicaSet", Some((deployment, hash)))
            if pod["metadata"]["labels"]["pod-template-hash"] == hash =>
        {
            Some(format!("{namespace}/Deployment/{deployment}"))
        }
        _ => Some(format!("{namespace}/{kind}/{name}")),
    }
}

fn kind_of(plural: &str) -> Option<&'static str> {
    match plural {
        "deployments" => Some("Deployment"),
        "statefulsets" => Some("StatefulSet"),
        "daemonsets" => Some("DaemonSet"),
        _ => None,
    }
}

impl KubeState {
    /// Adds a controller whose pod template has `containers` (`[{name, resources}]`).
    pub fn add_workload(&mut self, namespace: &str, kind: &str, name: &str, containers: Value) {
        self.workloads.insert(
            format!("{namespace}/{kind}/{name}"),
            json!({"apiVersion": "apps/v1", "kind": kind,
                   "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
                   "spec": {"template": {"spec": {"containers": containers}}}}),
        );
    }

    /// The workload's pods report `container` using `cpu_m` and `mem_mib` from now on.
    pub fn set_usage(&mut self, workload: &str, container: &str, cpu_m: u64, mem_mib: u64) {
        self.usage
            .entry(workload.to_owned())
            .or_default()
            .insert(container.to_owned(), (cpu_m, mem_mib));
    }

    /// The kubelet's view after `container` of `pod` was OOM-killed and restarted.
    pub fn oom_kill(&mut self, pod: &str, container: &str) {
        if let Some(pod) = self.pods.get_mut(pod) {
            let restarts = pod["status"]["containerStatuses"]
                .as_array()
                .and_then(|s| s.iter().find(|c| c["name"] == container))
                .and_then(|c| c["restartCount"].as_u64())
                .unwrap_or(0);
            let statuses = json!([{"name": container, "ready": true, "restartCount": restarts + 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]);
            pod["status"]["containerStatuses"] = statuses;
        }
    }

    /// `namespace/name` of the workload's pods.
    pub fn pods_of(&self, workload: &str) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| controller_of(p).as_deref() == Some(workload))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

pub(crate) async fn get_workload(
    State(s): State<Shared>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
) -> Reply {
    let kind = kind_of(&plural)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "no such resource"))?;
    lock(&s)
        .workloads
        .get(&format!("{namespace}/{kind}/{name}"))
        .cloned()
        .map(Json)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "workload not found"))
}

/// A strategic merge patch of the template's containers (matched by name), then a rollout:
/// the workload's pods take the new template's resources and start with no restarts.
pub(crate) async fn patch_workload(
    State(s): State<Shared>,
    Path((namespace, plural, name)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    let kind = kind_of(&plural)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "no such resource"))?;
    let key = format!("{namespace}/{kind}/{name}");
    let mut cluster = lock(&s);
    let workload = cluster
        .workloads
        .get_mut(&key)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "workload not found"))?;
    let patched = body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .ok_or_else(|| status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "no containers"))?;
    for patch in &patched {
        match containers.iter_mut().find(|c| c["name"] == patch["name"]) {
            Some(container) => merge(container, patch),
            None => containers.push(patch.clone()),
        }
    }
    let version = workload["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    workload["metadata"]["resourceVersion"] = json!((version + 1).to_string());
    let template = workload["spec"]["template"]["spec"]["containers"].clone();
    let answer = workload.clone();
    for pod in cluster.pods.values_mut() {
        if controller_of(pod).as_deref() != Some(key.as_str()) {
            continue;
        }
        for container in pod["spec"]["containers"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(new) = template
                .as_array()
                .and_then(|t| t.iter().find(|c| c["name"] == container["name"]))
            {
                container["resources"] = new["resources"].clone();
            }
        }
        pod["status"]["containerStatuses"] = json!([]);
    }
    Ok(Json(answer))
}

pub(crate) async fn list_pod_metrics(State(s): State<Shared>) -> Reply {
    let cluster = lock(&s);
    if cluster.usage.is_empty() {
        return Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let items: Vec<Value> = cluster
        .pods
        .values()
        .filter_map(|pod| {
            let usage = cluster.usage.get(&controller_of(pod)?)?;
            let containers: Vec<Value> = usage
                .iter()
                .map(|(name, (cpu, mem))| json!({"name": name, "usage": {"cpu": format!("{cpu}m"), "memory": format!("{mem}Mi")}}))
                .collect();
            Some(json!({"metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"]},
                        "window": "30s", "containers": containers}))
        })
        .collect();
    Ok(Json(
        json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    ))
}

pub(crate) async fn list_hpas(State(s): State<Shared>) -> Json<Value> {
    Json(
        json!({"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v2", "metadata": {}, "items": lock(&s).hpas}),
    )
}
