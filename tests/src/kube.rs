//! A Kubernetes API server for the calls the agent makes, on a free loopback port, stateful:
//! nodes get/list (one per page, so `continue` tokens are exercised)/patch (merge patches,
//! `resourceVersion` checked), pods list (by `spec.nodeName`), evictions (429 while the budget
//! over `app=guarded` pods allows none; `app=slow` pods stay listed, terminating, for a few
//! lists), PodDisruptionBudgets, PersistentVolumeClaims and PersistentVolumes list, and the
//! scale subresource of Deployments and StatefulSets, their templates and DaemonSets' read
//! and patched, pod metrics and HPAs (see [`crate::workloads`]), pods created (priority from their
//! PriorityClass, preempting lower-priority pods when none fits) and deleted, and with [`KubeState::karpenter`] set,
//! Karpenter's NodePools and EC2NodeClasses (see [`crate::karpenter`]). Real `kube::Client`s
//! talk to it over HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::karpenter::SimKarpenter;

/// What the server holds; tests read and change it between calls.
#[derive(Debug, Default)]
pub struct KubeState {
    pub nodes: HashMap<String, Value>,
    /// Keyed `namespace/name`.
    pub pods: BTreeMap<String, Value>,
    pub pdbs: Vec<Value>,
    pub claims: Vec<Value>,
    pub volumes: Vec<Value>,
    /// Disruptions the PodDisruptionBudget over `app=guarded` pods allows now.
    pub guarded_budget: i64,
    /// Replicas of each Deployment or StatefulSet, keyed `namespace/name`.
    pub replicas: HashMap<String, i64>,
    /// Every request, as `METHOD /path`.
    pub requests: Vec<String>,
    /// Evicted `app=slow` pods, with how many more pod lists still show them terminating.
    pub terminating: HashMap<String, u32>,
    /// How many pod lists an evicted `app=slow` pod stays for.
    pub slow_lists: u32,
    /// Behave like a cluster, not a recording: evicted pods of a ReplicaSet or StatefulSet
    /// come back Pending and are bound to a node that fits, evictions that would take a
    /// PodDisruptionBudget below its minimum are refused, and every eviction and node removal
    /// is checked against every budget.
    pub simulate: bool,
    /// Evictions the simulation admitted.
    pub evictions: u32,
    /// What broke a budget, one line each (simulation only).
    pub pdb_violations: Vec<String>,
    /// Names pods the controllers recreate.
    pub next_pod: u64,
    /// Karpenter, when the cluster runs it: its objects are served and it launches nodes for
    /// Pending pods.
    pub karpenter: Option<SimKarpenter>,
    /// PriorityClass name to value; a pod naming another is refused at creation.
    pub priority_classes: BTreeMap<String, i64>,
    /// Pods the scheduler preempted to place one of higher priority.
    pub preemptions: u32,
    /// Deployments, StatefulSets and DaemonSets, keyed `namespace/Kind/name` (see
    /// [`crate::workloads`]).
    pub workloads: BTreeMap<String, Value>,
    /// What each workload's containers use (millicores, MiB), served as metrics.k8s.io
    /// PodMetrics for each of its pods; no metrics API while empty.
    pub usage: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
    pub hpas: Vec<Value>,
}

pub(crate) type Shared = Arc<Mutex<KubeState>>;

pub(crate) fn lock(state: &Shared) -> MutexGuard<'_, KubeState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct FakeKube {
    pub state: Shared,
    /// `http://127.0.0.1:<port>`, for `kube::Config::new`.
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeKube {
    pub async fn start(initial: KubeState) -> std::io::Result<Self> {
        let state: Shared = Arc::new(Mutex::new(initial));
        let log = state.clone();
        let app = Router::new()
            .route("/api/v1/nodes/{name}", get(get_node).patch(patch_node))
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
                get(get_scale).patch(patch_scale),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale",
                get(get_scale).patch(patch_scale),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/{plural}/{name}",
                get(crate::workloads::get_workload).patch(crate::workloads::patch_workload),
            )
            .route(
                "/apis/metrics.k8s.io/v1beta1/pods",
                get(crate::workloads::list_pod_metrics),
            )
            .route(
                "/apis/autoscaling/v2/horizontalpodautoscalers",
                get(crate::workloads::list_hpas),
            )
            .route("/api/v1/pods", get(list_pods))
            .route("/api/v1/nodes", get(list_nodes))
            .route("/apis/policy/v1/poddisruptionbudgets", get(list_pdbs))
            .route("/api/v1/persistentvolumeclaims", get(list_claims))
            .route("/api/v1/persistentvolumes", get(list_volumes))
            .route("/api/v1/namespaces/{ns}/pods/{name}/eviction", post(evict))
            .route("/api/v1/namespaces/{ns}/pods", post(create_pod))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                axum::routing::delete(delete_pod),
            )
            .route(
                "/apis/karpenter.sh/v1/nodepools",
                get(list_node_pools).post(create_node_pool),
            )
            .route(
                "/apis/karpenter.sh/v1/nodepools/{name}",
                get(get_node_pool)
                    .patch(patch_node_pool)
                    .delete(delete_node_pool),
            )
            .route(
                "/apis/karpenter.k8s.aws/v1/ec2nodeclasses",
                get(list_node_classes),
            )
            .route(
                "/apis/karpenter.k8s.aws/v1/ec2nodeclasses/{name}",
                get(get_node_class),
            )
            .layer(axum::middleware::from_fn(
                move |method: Method, uri: Uri, req, next: axum::middleware::Next| {
                    lock(&log).requests.push(format!("{method} {}", uri.path()));
                    async move { next.run(req).await }
                },
            ))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, url, server })
    }

    pub fn state(&self) -> MutexGuard<'_, KubeState> {
        lock(&self.state)
    }

    pub fn node(&self, name: &str) -> Value {
        self.state().nodes.get(name).cloned().unwrap_or(Value::Null)
    }

    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// `namespace/name` of the pods on `node`, sorted.
    pub fn pods_on(&self, node: &str) -> Vec<String> {
        self.state()
            .pods
            .iter()
            .filter(|(_, p)| p["spec"]["nodeName"] == node)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// A running pod with one container and an emptyDir volume, owned by `owner_kind`;
/// `extra` is merged over it. Returns its `namespace/name` key and the pod.
pub fn pod(
    namespace: &str,
    name: &str,
    node: &str,
    owner_kind: &str,
    extra: Value,
) -> (String, Value) {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": "owner", "uid": "u1"}]},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "x"}],
                 "volumes": [{"name": "scratch", "emptyDir": {}}]},
        "status": {"phase": "Running"}
    });
    merge(&mut pod, &extra);
    (format!("{namespace}/{name}"), pod)
}

/// A ready node of an EC2 instance, as the kubelet registers it on EKS.
pub fn node(
    name: &str,
    instance_id: &str,
    instance_type: &str,
    zone: &str,
    capacity_type: &str,
    allocatable: (&str, &str, &str),
    extra_labels: Value,
) -> Value {
    let (cpu, memory, pods) = allocatable;
    let mut node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "1", "labels": {
            "kubernetes.io/hostname": name, "node.kubernetes.io/instance-type": instance_type,
            "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": zone, "karpenter.sh/capacity-type": capacity_type}},
        "spec": {"providerID": format!("aws:///{zone}/{instance_id}")},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}});
    merge(&mut node["metadata"]["labels"], &extra_labels);
    node
}

pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Json<Value>) {
    (
        code,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
        ),
    )
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub(crate) type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

async fn get_node(State(s): State<Shared>, Path(name): Path<String>) -> Reply {
    lock(&s)
        .nodes
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "node not found"))
}

async fn patch_node(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let mut cluster = lock(&s);
    let node = cluster
        .nodes
        .get_mut(&name)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "node not found"))?;
    patch_versioned(node, &body)
}

/// A merge patch, refused with 409 when it names a `resourceVersion` that is not the
/// object's; the object's version moves on.
fn patch_versioned(object: &mut Value, body: &Value) -> Reply {
    let current = object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    if let Some(expected) = body["metadata"]["resourceVersion"].as_str()
        && expected != current
    {
        return Err(status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        ));
    }
    merge(object, body);
    let next: u64 = current.parse::<u64>().unwrap_or(0) + 1;
    object["metadata"]["resourceVersion"] = json!(next.to_string());
    Ok(Json(object.clone()))
}

fn scale(namespace: &str, name: &str, replicas: i64) -> Json<Value> {
    Json(json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas}, "status": {"replicas": replicas}
    }))
}

async fn get_scale(
    State(s): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Reply {
    let replicas = lock(&s)
        .replicas
        .get(&format!("{namespace}/{name}"))
        .copied()
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "workload not found"))?;
    Ok(scale(&namespace, &name, replicas))
}

async fn patch_scale(
    State(s): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    let mut cluster = lock(&s);
    let replicas = cluster
        .replicas
        .get_mut(&format!("{namespace}/{name}"))
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "workload not found"))?;
    *replicas = body["spec"]["replicas"].as_i64().unwrap_or(*replicas);
    Ok(scale(&namespace, &name, *replicas))
}

async fn list_pods(
    State(s): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let mut guard = lock(&s);
    let cluster = &mut *guard;
    for (key, lists_left) in &mut cluster.terminating {
        *lists_left = lists_left.saturating_sub(1);
        if *lists_left == 0 {
            cluster.pods.remove(key);
        }
    }
    cluster.terminating.retain(|_, lists_left| *lists_left > 0);
    let node = query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .map(str::to_owned);
    let items: Vec<Value> = cluster
        .pods
        .values()
        .filter(|p| node.as_deref().is_none_or(|n| p["spec"]["nodeName"] == n))
        .cloned()
        .collect();
    Json(
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

async fn list_nodes(
    State(s): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let cluster = lock(&s);
    let mut names: Vec<&String> = cluster.nodes.keys().collect();
    names.sort();
    let start: usize = query
        .get("continue")
        .and_then(|c| c.strip_prefix("after="))
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let item = names
        .get(start)
        .and_then(|n| cluster.nodes.get(*n))
        .map(|n| {
            let mut node = n.clone();
            if let Some(fields) = node.as_object_mut() {
                fields.remove("kind");
            }
            node
        });
    let next = (start + 1 < names.len()).then(|| format!("after={}", start + 1));
    Json(
        json!({"kind": "NodeList", "metadata": {"continue": next.unwrap_or_default()}, "items": item.into_iter().collect::<Vec<_>>()}),
    )
}

async fn list_pdbs(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"kind": "PodDisruptionBudgetList", "metadata": {}, "items": lock(&s).pdbs}))
}

async fn list_claims(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"kind": "PersistentVolumeClaimList", "metadata": {}, "items": lock(&s).claims}))
}

async fn list_volumes(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"kind": "PersistentVolumeList", "metadata": {}, "items": lock(&s).volumes}))
}

/// Admission as the API server does it: the pod's priority from its PriorityClass (refused
/// when there is none of that name); then the scheduler (and Karpenter) see it.
async fn create_pod(
    State(s): State<Shared>,
    Path(namespace): Path<String>,
    Json(mut body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
    let mut cluster = lock(&s);
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = format!("{namespace}/{name}");
    if cluster.pods.contains_key(&key) {
        return Err(status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("pods \"{name}\" already exists"),
        ));
    }
    if let Some(class) = body["spec"]["priorityClassName"].as_str() {
        let Some(value) = cluster.priority_classes.get(class).copied() else {
            return Err(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "pods \"{name}\" is forbidden: no PriorityClass with name {class} was found"
                ),
            ));
        };
        body["spec"]["priority"] = json!(value);
    }
    body["metadata"]["namespace"] = json!(namespace);
    body["status"] = json!({"phase": "Pending"});
    cluster.pods.insert(key, body.clone());
    if cluster.simulate {
        cluster.schedule();
    }
    Ok((StatusCode::CREATED, Json(body)))
}

async fn delete_pod(
    State(s): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Reply {
    let mut cluster = lock(&s);
    let pod = cluster
        .pods
        .remove(&format!("{namespace}/{name}"))
        .ok_or_else(|| {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("pods \"{name}\" not found"),
            )
        })?;
    if cluster.simulate {
        cluster.schedule();
    }
    Ok(Json(pod))
}

async fn evict(
    State(s): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let mut cluster = lock(&s);
    let key = format!("{namespace}/{name}");
    let Some(pod) = cluster.pods.get(&key) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "pod not found");
    };
    let guarded = pod["metadata"]["labels"]["app"] == "guarded";
    let slow = pod["metadata"]["labels"]["app"] == "slow";
    let pod_before = cluster.simulate.then(|| pod.clone());
    if cluster.simulate
        && let Some(budget) = cluster.budget_refusing(&key)
    {
        return status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            &format!("Cannot evict pod as it would violate the pod's disruption budget {budget}."),
        );
    }
    if guarded && cluster.guarded_budget <= 0 {
        return status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
    }
    if guarded {
        cluster.guarded_budget -= 1;
    }
    if slow {
        // Shuts down over its grace period: still listed, with a deletion timestamp.
        let lists = cluster.slow_lists;
        cluster.terminating.insert(key.clone(), lists);
        if let Some(pod) = cluster.pods.get_mut(&key) {
            pod["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        }
    } else {
        cluster.pods.remove(&key);
    }
    if cluster.simulate {
        cluster.evictions += 1;
        if let Some(pod) = pod_before {
            cluster.recreate(&pod);
        }
        cluster.check_budgets(&format!("eviction of {key}"));
        cluster.schedule();
    }
    (
        StatusCode::CREATED,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ),
    )
}

impl KubeState {
    /// Registers a node (the kubelet of a new instance).
    pub fn add_node(&mut self, node: Value) {
        if let Some(name) = node["metadata"]["name"].as_str() {
            self.nodes.insert(name.to_owned(), node);
        }
    }

    /// The node leaves with its instance: its pods are gone (and recreated by their
    /// controllers), and the budgets are checked.
    pub fn remove_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_none() {
            return;
        }
        let lost: Vec<(String, Value)> = self
            .pods
            .iter()
            .filter(|(_, p)| p["spec"]["nodeName"] == name)
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        for (key, pod) in &lost {
            self.pods.remove(key);
            self.recreate(pod);
        }
        if lost.iter().any(|(_, p)| !is_daemon(p)) {
            self.check_budgets(&format!("removal of node {name}"));
        }
        self.schedule();
    }

    /// Workload pods not bound to a node.
    pub fn pending(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| p["spec"]["nodeName"].as_str().is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The ReplicaSet or StatefulSet of an evicted or lost pod makes it again, Pending.
    fn recreate(&mut self, pod: &Value) {
        let owner = &pod["metadata"]["ownerReferences"][0];
        let (Some(kind), Some(owner_name), Some(namespace)) = (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            pod["metadata"]["namespace"].as_str(),
        ) else {
            return;
        };
        let name = match kind {
            "StatefulSet" => pod["metadata"]["name"]
                .as_str()
                .unwrap_or(owner_name)
                .to_owned(),
            "ReplicaSet" => {
                self.next_pod += 1;
                format!("{owner_name}-r{:05}", self.next_pod)
            }
            _ => return,
        };
        let mut again = pod.clone();
        again["metadata"]["name"] = json!(name);
        if let Some(metadata) = again["metadata"].as_object_mut() {
            metadata.remove("deletionTimestamp");
        }
        if let Some(spec) = again["spec"].as_object_mut() {
            spec.remove("nodeName");
        }
        again["status"] = json!({"phase": "Pending"});
        self.pods.insert(format!("{namespace}/{name}"), again);
    }

    /// Binds Pending pods to nodes (see [`KubeState::bind`]); with Karpenter, launches nodes
    /// for those that fit none. Returns how many were bound.
    pub fn schedule(&mut self) -> usize {
        let bound = self.bind();
        if self.karpenter.is_some() {
            let before = self.pending().len();
            self.provision();
            return bound + before.saturating_sub(self.pending().len());
        }
        bound
    }

    /// Binds Pending pods, largest first, to the schedulable node that fits them most tightly
    /// (resources, pod slots, nodeSelector, taints and tolerations), as a bin-packing
    /// scheduler profile does. Returns how many were bound.
    pub(crate) fn bind(&mut self) -> usize {
        let mut pending: Vec<(String, Resources)> = self
            .pods
            .iter()
            .filter(|(_, p)| p["spec"]["nodeName"].as_str().is_none())
            .map(|(k, p)| (k.clone(), requests_of(p)))
            .collect();
        if pending.is_empty() {
            return 0;
        }
        pending.sort_by(|a, b| {
            b.1.cpu_m
                .cmp(&a.1.cpu_m)
                .then(b.1.mem_mib.cmp(&a.1.mem_mib))
        });
        let mut free: BTreeMap<String, Resources> = self
            .nodes
            .iter()
            .filter(|(_, node)| node["spec"]["unschedulable"] != true)
            .map(|(name, node)| (name.clone(), allocatable_of(node)))
            .collect();
        for pod in self.pods.values() {
            if let Some(left) = pod["spec"]["nodeName"]
                .as_str()
                .and_then(|n| free.get_mut(n))
            {
                let used = requests_of(pod);
                left.take(used);
            }
        }
        let mut bound = 0;
        for (key, need) in pending {
            let Some(pod) = self.pods.get(&key) else {
                continue;
            };
            let fitting = free
                .iter()
                .filter(|(_, left)| left.holds(need))
                .filter(|(name, _)| self.nodes.get(*name).is_some_and(|n| admits(n, pod)))
                .min_by_key(|(name, left)| (left.cpu_m - need.cpu_m, (*name).clone()))
                .map(|(name, _)| name.clone());
            let best = fitting.or_else(|| self.preempt_for(&key, need, &mut free));
            if let Some(node) = best
                && let Some(pod) = self.pods.get_mut(&key)
            {
                pod["spec"]["nodeName"] = json!(node);
                pod["status"] = json!({"phase": "Running"});
                if let Some(left) = free.get_mut(&node) {
                    left.take(need);
                }
                bound += 1;
            }
        }
        bound
    }

    /// A node for the Pending pod `key` once pods of lower priority on it are preempted, as
    /// the scheduler's preemption chooses: victims lowest priority first on each node, and the
    /// node whose highest victim ranks lowest, then the least sum of victim priorities, the
    /// fewest victims, the tightest fit. The victims are deleted (their controllers make them
    /// again).
    fn preempt_for(
        &mut self,
        key: &str,
        need: Resources,
        free: &mut BTreeMap<String, Resources>,
    ) -> Option<String> {
        let pod = self.pods.get(key)?;
        let priority = priority_of(pod);
        type Rank = (i64, i64, usize, u64, String);
        let mut choice: Option<(Rank, Vec<String>)> = None;
        for (name, left) in free.iter() {
            if !self.nodes.get(name).is_some_and(|n| admits(n, pod)) {
                continue;
            }
            let mut victims: Vec<(&String, &Value)> = self
                .pods
                .iter()
                .filter(|(_, p)| {
                    p["spec"]["nodeName"] == name.as_str()
                        && !is_daemon(p)
                        && priority_of(p) < priority
                })
                .collect();
            victims.sort_by_key(|(k, p)| (priority_of(p), (*k).clone()));
            let mut room = *left;
            let mut chosen = Vec::new();
            let (mut highest, mut sum) = (i64::MIN, 0);
            for (victim, p) in victims {
                if room.holds(need) {
                    break;
                }
                room.give(requests_of(p));
                chosen.push(victim.clone());
                highest = highest.max(priority_of(p));
                // Offset as the scheduler does, so that more victims weigh more.
                sum += priority_of(p) + (1 << 31);
            }
            if chosen.is_empty() || !room.holds(need) {
                continue;
            }
            let rank = (
                highest,
                sum,
                chosen.len(),
                room.cpu_m - need.cpu_m,
                name.clone(),
            );
            if choice.as_ref().is_none_or(|(best, _)| rank < *best) {
                choice = Some((rank, chosen));
            }
        }
        let ((.., node), victims) = choice?;
        for victim in victims {
            if let Some(gone) = self.pods.remove(&victim) {
                if let Some(left) = free.get_mut(&node) {
                    left.give(requests_of(&gone));
                }
                self.preemptions += 1;
                self.recreate(&gone);
            }
        }
        Some(node)
    }

    /// Each budget: its name, its healthy pods, how many pods it covers, the least it allows.
    fn budgets(&self) -> Vec<(String, Vec<String>, u64, u64)> {
        self.pdbs
            .iter()
            .filter_map(|pdb| {
                let namespace = pdb["metadata"]["namespace"].as_str()?;
                let name = pdb["metadata"]["name"].as_str()?;
                let selector = pdb["spec"]["selector"]["matchLabels"].as_object()?;
                let members: Vec<(&String, &Value)> = self
                    .pods
                    .iter()
                    .filter(|(_, p)| {
                        p["metadata"]["namespace"] == namespace
                            && selector
                                .iter()
                                .all(|(k, v)| &p["metadata"]["labels"][k] == v)
                    })
                    .collect();
                let healthy: Vec<String> = members
                    .iter()
                    .filter(|(_, p)| {
                        p["spec"]["nodeName"].as_str().is_some()
                            && p["metadata"]["deletionTimestamp"].is_null()
                    })
                    .map(|(k, _)| (*k).clone())
                    .collect();
                let expected = members.len() as u64;
                let least = match (
                    pdb["spec"]["minAvailable"].as_u64(),
                    pdb["spec"]["maxUnavailable"].as_u64(),
                ) {
                    (Some(min), _) => min,
                    (None, Some(max)) => expected.saturating_sub(max),
                    (None, None) => 0,
                };
                Some((format!("{namespace}/{name}"), healthy, expected, least))
            })
            .collect()
    }

    /// The budget an eviction of `pod` would break, if any.
    fn budget_refusing(&self, pod: &str) -> Option<String> {
        self.budgets()
            .into_iter()
            .find(|(_, healthy, _, least)| {
                healthy.iter().any(|k| k == pod) && (healthy.len() as u64) <= *least
            })
            .map(|(name, ..)| name)
    }

    fn check_budgets(&mut self, after: &str) {
        for (name, healthy, expected, least) in self.budgets() {
            if (healthy.len() as u64) < least {
                self.pdb_violations.push(format!(
                    "{name}: {} of {expected} healthy (at least {least}) after the {after}",
                    healthy.len()
                ));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Resources {
    pub(crate) cpu_m: u64,
    pub(crate) mem_mib: u64,
    pods: u64,
}

impl Resources {
    /// Whether a pod that requests `need` fits in what is left.
    fn holds(&self, need: Resources) -> bool {
        self.cpu_m >= need.cpu_m && self.mem_mib >= need.mem_mib && self.pods > 0
    }

    /// What is left once a pod that requests `used` runs here.
    fn take(&mut self, used: Resources) {
        self.cpu_m = self.cpu_m.saturating_sub(used.cpu_m);
        self.mem_mib = self.mem_mib.saturating_sub(used.mem_mib);
        self.pods = self.pods.saturating_sub(1);
    }

    /// What is left once a pod that requested `freed` is gone.
    fn give(&mut self, freed: Resources) {
        self.cpu_m += freed.cpu_m;
        self.mem_mib += freed.mem_mib;
        self.pods += 1;
    }
}

fn allocatable_of(node: &Value) -> Resources {
    let allocatable = &node["status"]["allocatable"];
    Resources {
        cpu_m: cpu_millis(allocatable["cpu"].as_str().unwrap_or("0")),
        mem_mib: mem_mib(allocatable["memory"].as_str().unwrap_or("0")),
        pods: allocatable["pods"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or(110),
    }
}

fn priority_of(pod: &Value) -> i64 {
    pod["spec"]["priority"].as_i64().unwrap_or(0)
}

fn is_daemon(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
}

pub(crate) fn requests_of(pod: &Value) -> Resources {
    let mut total = Resources::default();
    for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let requests = &container["resources"]["requests"];
        total.cpu_m += cpu_millis(requests["cpu"].as_str().unwrap_or("0"));
        total.mem_mib += mem_mib(requests["memory"].as_str().unwrap_or("0"));
    }
    total
}

/// A cpu quantity in millicores, as the agent's snapshot reads it (0 when unreadable).
pub(crate) fn cpu_millis(quantity: &str) -> u64 {
    spotwise_core::snapshot::cpu_millis(quantity).unwrap_or(0)
}

/// A memory quantity in MiB, as the agent's snapshot reads it (0 when unreadable).
pub(crate) fn mem_mib(quantity: &str) -> u64 {
    spotwise_core::snapshot::mem_mib(quantity).unwrap_or(0)
}

/// nodeSelector labels and NoSchedule/NoExecute taints.
pub(crate) fn admits(node: &Value, pod: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let selected = pod["spec"]["nodeSelector"]
        .as_object()
        .is_none_or(|s| s.iter().all(|(k, v)| &labels[k] == v));
    let tolerations = pod["spec"]["tolerations"].as_array();
    let tolerated = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|taint| {
            taint["effect"] == "PreferNoSchedule"
                || tolerations.into_iter().flatten().any(|t| {
                    let effect_ok = t["effect"]
                        .as_str()
                        .is_none_or(|e| e.is_empty() || taint["effect"] == e);
                    let key_ok = match t["key"].as_str() {
                        None | Some("") => t["operator"] == "Exists",
                        Some(k) => {
                            taint["key"] == k
                                && (t["operator"] == "Exists" || t["value"] == taint["value"])
                        }
                    };
                    effect_ok && key_ok
                })
        });
    selected && tolerated
}

fn not_installed() -> (StatusCode, Json<Value>) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Karpenter's objects of one kind, or 404 when the cluster does not serve them.
fn karpenter_objects(
    cluster: &KubeState,
    classes: bool,
) -> Result<&BTreeMap<String, Value>, (StatusCode, Json<Value>)> {
    let karpenter = cluster.karpenter.as_ref().ok_or_else(not_installed)?;
    Ok(if classes {
        &karpenter.node_classes
    } else {
        &karpenter.node_pools
    })
}

fn node_pools_mut(
    cluster: &mut KubeState,
) -> Result<&mut BTreeMap<String, Value>, (StatusCode, Json<Value>)> {
    Ok(&mut cluster
        .karpenter
        .as_mut()
        .ok_or_else(not_installed)?
        .node_pools)
}

fn list_of(kind: &str, objects: &BTreeMap<String, Value>) -> Json<Value> {
    Json(json!({"kind": kind, "metadata": {}, "items": objects.values().collect::<Vec<_>>()}))
}

async fn list_node_pools(State(s): State<Shared>) -> Reply {
    Ok(list_of(
        "NodePoolList",
        karpenter_objects(&lock(&s), false)?,
    ))
}

async fn list_node_classes(State(s): State<Shared>) -> Reply {
    Ok(list_of(
        "EC2NodeClassList",
        karpenter_objects(&lock(&s), true)?,
    ))
}

fn karpenter_object(s: &Shared, classes: bool, name: &str) -> Reply {
    karpenter_objects(&lock(s), classes)?
        .get(name)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{name} not found"),
            )
        })
}

async fn get_node_pool(State(s): State<Shared>, Path(name): Path<String>) -> Reply {
    karpenter_object(&s, false, &name)
}

async fn get_node_class(State(s): State<Shared>, Path(name): Path<String>) -> Reply {
    karpenter_object(&s, true, &name)
}

async fn create_node_pool(State(s): State<Shared>, Json(mut body): Json<Value>) -> Reply {
    let mut cluster = lock(&s);
    let pools = node_pools_mut(&mut cluster)?;
    let name = body["metadata"]["name"]
        .as_str()
        .ok_or_else(|| status(StatusCode::BAD_REQUEST, "Invalid", "metadata.name missing"))?
        .to_owned();
    if pools.contains_key(&name) {
        return Err(status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            "nodepool already exists",
        ));
    }
    body["metadata"]["resourceVersion"] = json!("1");
    pools.insert(name, body.clone());
    Ok(Json(body))
}

async fn patch_node_pool(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let mut cluster = lock(&s);
    let pool = node_pools_mut(&mut cluster)?
        .get_mut(&name)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "nodepool not found"))?;
    patch_versioned(pool, &body)
}

async fn delete_node_pool(State(s): State<Shared>, Path(name): Path<String>) -> Reply {
    let mut cluster = lock(&s);
    let removed = node_pools_mut(&mut cluster)?
        .remove(&name)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", "nodepool not found"))?;
    // Karpenter drains and removes the pool's nodes before the pool goes.
    for node in cluster.nodes_of_pool(&name) {
        cluster.remove_node(&node);
    }
    Ok(Json(removed))
}
