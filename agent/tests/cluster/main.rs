//! The agent against an in-test HTTP server speaking the Kubernetes REST API (the calls the
//! agent makes), driven through the real `kube::Client`, and against the local stack's SQS.

// Test helpers outside #[test] functions may panic on setup failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use hmac::Mac;
use serde_json::{Value, json};
use spotwise_agent::{
    Agent, Metrics, Outcome, QueueWorker, Reporter, SecretError, read_cluster_secret,
};
use spotwise_core::ClusterId;
use spotwise_core::action::{
    ActionSpec, AgentAction, INTERRUPTION_TAINT, LifecycleHook, ScalableKind, WorkloadRef,
    hmac_sha256,
};
use spotwise_core::domain::Taint;
use spotwise_core::messages::{ActionReport, ReportedOutcome};
use spotwise_core::rightsizing::{ContainerResources, ControllerRef};
use spotwise_testkit::LocalStack;
use spotwise_testkit::kube::{FakeKube, KubeState, node as kube_node, pod};
use time::{Duration, OffsetDateTime};

mod actions;
mod drain;
mod metrics;
mod queue;
mod reporting;
mod verification;

const SECRET: &[u8] = b"cluster-secret-c1";

fn instance_of(node: &str) -> &'static str {
    if node == "ip-10-0-1-17.ec2.internal" {
        "i-0b662ef9931388ba0"
    } else {
        "i-0a1b2c3d4e5f60718"
    }
}

/// Two m5.large nodes (one spot) and the pods of a small shop: two web pods, a DaemonSet pod,
/// a mirror pod and a finished job on the spot node, one web pod on the other.
fn sample_cluster() -> KubeState {
    let mut c = KubeState::default();
    for name in ["ip-10-0-1-17.ec2.internal", "ip-10-0-2-9.ec2.internal"] {
        let capacity = if name.starts_with("ip-10-0-1") {
            "spot"
        } else {
            "on-demand"
        };
        c.nodes.insert(
            name.into(),
            kube_node(
                name,
                instance_of(name),
                "m5.large",
                "us-east-1b",
                capacity,
                ("1930m", "7446Mi", "29"),
                json!({}),
            ),
        );
    }
    c.pdbs.push(json!({"metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}}, "status": {"disruptionsAllowed": 1}}));
    c.replicas.insert("shop/web".into(), 3);
    let node = "ip-10-0-1-17.ec2.internal";
    c.pods.extend([
        pod("shop", "web-1", node, "ReplicaSet", json!({})),
        pod("shop", "web-2", node, "ReplicaSet", json!({})),
        pod("kube-system", "aws-node-x1", node, "DaemonSet", json!({})),
        pod(
            "kube-system",
            "static-proxy",
            node,
            "Node",
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}}),
        ),
        pod(
            "batch",
            "report-1",
            node,
            "Job",
            json!({"status": {"phase": "Succeeded"}}),
        ),
        pod(
            "shop",
            "web-9",
            "ip-10-0-2-9.ec2.internal",
            "ReplicaSet",
            json!({}),
        ),
    ]);
    c
}

/// The sample cluster behind a fake API server, and a real client of it.
struct Cluster {
    fake: FakeKube,
    client: kube::Client,
}

impl std::ops::Deref for Cluster {
    type Target = FakeKube;
    fn deref(&self) -> &FakeKube {
        &self.fake
    }
}

impl Cluster {
    async fn start() -> Self {
        let fake = FakeKube::start(sample_cluster()).await.unwrap();
        let client = kube::Client::try_from(kube::Config::new(fake.url.parse().unwrap())).unwrap();
        Self { fake, client }
    }
}

fn action(spec: ActionSpec) -> AgentAction {
    let now = OffsetDateTime::now_utc();
    AgentAction {
        action_id: format!("a-{}", now.unix_timestamp_nanos()),
        cluster_id: ClusterId::new("c1").unwrap(),
        spec,
        reason: "test".into(),
        issued_at: now,
        not_after: now + Duration::minutes(2),
        signature: String::new(),
    }
}

fn cordon_node(node: &str) -> ActionSpec {
    ActionSpec::Cordon { node: node.into() }
}

fn uncordon_node(node: &str) -> ActionSpec {
    ActionSpec::Uncordon { node: node.into() }
}

fn drain_node(node: &str) -> ActionSpec {
    ActionSpec::Drain {
        node: node.into(),
        taint: None,
        lifecycle_hook: None,
    }
}

fn interruption_taint() -> Taint {
    Taint {
        key: INTERRUPTION_TAINT.into(),
        value: Some("spot".into()),
        effect: "NoSchedule".into(),
    }
}

fn scale_web(replicas: u32) -> ActionSpec {
    ActionSpec::Scale {
        workload: WorkloadRef {
            namespace: "shop".into(),
            kind: ScalableKind::Deployment,
            name: "web".into(),
        },
        replicas,
    }
}

/// An action in the wire form agents read before typed actions (`kind`, `target`, free-form
/// `params`), signed over that form as the earlier platform signed it.
fn legacy_signed(kind: &str, target: Value, params: Value) -> String {
    let now = OffsetDateTime::now_utc();
    let mut legacy = json!({
        "action_id": format!("old-{}", now.unix_timestamp_nanos()),
        "cluster_id": "c1",
        "kind": kind,
        "target": target,
        "params": params,
        "reason": "queued before the upgrade",
        "issued_at": spotwise_core::rfc3339(now),
        "not_after": spotwise_core::rfc3339(now + Duration::minutes(2)),
    });
    // The earlier canonical form: compact JSON, keys sorted, no signature.
    let canonical = serde_json::to_string(&legacy).unwrap();
    let signature = hex::encode(
        hmac_sha256(SECRET, canonical.as_bytes())
            .finalize()
            .into_bytes(),
    );
    legacy["signature"] = signature.into();
    legacy.to_string()
}

fn agent(kube: &Cluster, dry_run: bool) -> Agent {
    Agent::new(
        ClusterId::new("c1").unwrap(),
        SECRET.to_vec(),
        kube.client.clone(),
        dry_run,
    )
}

fn signed(a: AgentAction) -> String {
    serde_json::to_string(&a.sign(SECRET)).unwrap()
}

fn guard(kube: &Cluster, names: &[&str], budget: i64) {
    let mut cluster = kube.state();
    for name in names {
        let (key, value) = pod(
            "shop",
            name,
            "ip-10-0-1-17.ec2.internal",
            "ReplicaSet",
            json!({"metadata": {"labels": {"app": "guarded"}}}),
        );
        cluster.pods.insert(key, value);
    }
    cluster.guarded_budget = budget;
}
