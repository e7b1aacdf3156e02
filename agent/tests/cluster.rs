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
    ActionSpec, AgentAction, LifecycleHook, ScalableKind, WorkloadRef, hmac_sha256,
};
use spotwise_core::domain::Taint;
use spotwise_core::messages::{ActionReport, ReportedOutcome};
use spotwise_testkit::LocalStack;
use spotwise_testkit::kube::{FakeKube, KubeState, node as kube_node, pod};
use time::{Duration, OffsetDateTime};

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
        key: "spotwise.io/interruption".into(),
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

#[tokio::test]
async fn cordon_is_visible_on_the_next_get_and_uncordon_reverts_it() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let node = "ip-10-0-1-17.ec2.internal";
    let now = OffsetDateTime::now_utc();

    let outcome = agent.handle(&signed(action(cordon_node(node))), now).await;
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    assert_eq!(kube.node(node)["spec"]["unschedulable"], true);

    // Duplicate delivery is harmless.
    let outcome = agent.handle(&signed(action(cordon_node(node))), now).await;
    assert!(matches!(outcome, Outcome::Done { .. }));

    agent
        .handle(&signed(action(uncordon_node(node))), now)
        .await;
    assert_eq!(kube.node(node)["spec"]["unschedulable"], false);
    assert_eq!(
        kube.node("ip-10-0-2-9.ec2.internal")["spec"].get("unschedulable"),
        None,
        "other nodes untouched"
    );
}

#[tokio::test]
async fn label_and_taint_are_applied_once() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let node = "ip-10-0-2-9.ec2.internal";
    let now = OffsetDateTime::now_utc();

    let label = action(ActionSpec::Label {
        node: node.into(),
        labels: BTreeMap::from([("spotwise.io/managed".into(), Some("true".into()))]),
    });
    assert!(matches!(
        agent.handle(&signed(label), now).await,
        Outcome::Done { .. }
    ));
    assert_eq!(
        kube.node(node)["metadata"]["labels"]["spotwise.io/managed"],
        "true"
    );
    assert_eq!(
        kube.node(node)["metadata"]["labels"]["kubernetes.io/hostname"],
        node,
        "merge keeps other labels"
    );

    for _ in 0..2 {
        let taint = ActionSpec::Taint {
            node: node.into(),
            taint: interruption_taint(),
        };
        let outcome = agent.handle(&signed(action(taint)), now).await;
        assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    }
    let taints = kube.node(node)["spec"]["taints"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(taints.len(), 1);
    assert_eq!(taints[0]["key"], "spotwise.io/interruption");

    // A typed label cannot carry a number; an earlier-form message that does is refused by name.
    let bad = legacy_signed(
        "label",
        json!({"type": "node", "name": node}),
        json!({"labels": {"x": 1}}),
    );
    assert!(
        matches!(agent.handle(&bad, now).await, Outcome::Rejected { reason, .. } if reason.contains("params.labels"))
    );
}

#[tokio::test]
async fn scale_sets_replicas_through_the_scale_subresource() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let outcome = agent
        .handle(&signed(action(scale_web(0))), OffsetDateTime::now_utc())
        .await;
    assert!(
        matches!(outcome, Outcome::Done { ref detail, previous_replicas: Some(3), .. } if detail.contains("scaled from 3 to 0")),
        "{outcome:?}"
    );
    assert_eq!(kube.state().replicas["shop/web"], 0);
}

#[tokio::test]
async fn unverifiable_actions_never_reach_the_cluster() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let node = "ip-10-0-1-17.ec2.internal";
    let now = OffsetDateTime::now_utc();

    let mut wrong_cluster = action(cordon_node(node));
    wrong_cluster.cluster_id = ClusterId::new("c2").unwrap();
    let expired = action(cordon_node(node));
    let mut forged: AgentAction = serde_json::from_str(&signed(action(cordon_node(node)))).unwrap();
    forged.spec = cordon_node("ip-10-0-2-9.ec2.internal");

    let cases = [
        (signed(wrong_cluster), "serves c1"),
        (
            serde_json::to_string(&expired.clone().sign(SECRET)).unwrap(),
            "expired",
        ),
        (serde_json::to_string(&forged).unwrap(), "invalid signature"),
        (
            serde_json::to_string(&action(cordon_node(node)).sign(b"other-secret")).unwrap(),
            "invalid signature",
        ),
        ("{not json".to_owned(), "unreadable"),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let at = if i == 1 {
            now + Duration::minutes(3)
        } else {
            now
        };
        match agent.handle(body, at).await {
            Outcome::Rejected { reason, .. } => {
                assert!(reason.contains(expected), "case {i}: {reason}")
            }
            other => panic!("case {i}: expected rejection, got {other:?}"),
        }
    }
    assert!(
        kube.requests().is_empty(),
        "no Kubernetes call for rejected actions: {:?}",
        kube.requests()
    );
}

#[tokio::test]
async fn dry_run_reports_without_calling_the_api() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, true);
    let outcome = agent
        .handle(
            &signed(action(cordon_node("ip-10-0-1-17.ec2.internal"))),
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(
        matches!(outcome, Outcome::WouldDo { ref detail, .. } if detail == "cordon node ip-10-0-1-17.ec2.internal"),
        "{outcome:?}"
    );
    assert!(kube.requests().is_empty());
}

#[tokio::test]
async fn missing_node_is_a_final_failure() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let outcome = agent
        .handle(
            &signed(action(cordon_node("gone"))),
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{outcome:?}"
    );
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

#[tokio::test]
async fn drain_evicts_what_should_move_and_leaves_daemonset_mirror_and_finished_pods() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let node = "ip-10-0-1-17.ec2.internal";
    let drain = ActionSpec::Drain {
        node: node.into(),
        taint: Some(interruption_taint()),
        lifecycle_hook: None,
    };
    let outcome = agent
        .handle(&signed(action(drain)), OffsetDateTime::now_utc())
        .await;
    match &outcome {
        Outcome::Done { detail, .. } => {
            assert!(detail.contains("2 evicted, 3 skipped"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(kube.node(node)["spec"]["unschedulable"], true);
    assert_eq!(
        kube.node(node)["spec"]["taints"][0]["key"],
        "spotwise.io/interruption"
    );
    assert_eq!(
        kube.pods_on(node),
        [
            "batch/report-1",
            "kube-system/aws-node-x1",
            "kube-system/static-proxy"
        ]
    );
    assert_eq!(
        kube.pods_on("ip-10-0-2-9.ec2.internal"),
        ["shop/web-9"],
        "other nodes' pods untouched"
    );

    // A duplicate delivery finds nothing left to move.
    let again = agent
        .handle(&signed(action(drain_node(node))), OffsetDateTime::now_utc())
        .await;
    assert!(
        matches!(again, Outcome::Done { ref detail, .. } if detail.contains("0 evicted")),
        "{again:?}"
    );
}

#[tokio::test]
async fn drain_blocked_by_a_pdb_finishes_once_the_budget_allows() {
    let kube = Cluster::start().await;
    guard(&kube, &["db-1", "db-2"], 0);
    let state = kube.state.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        state.lock().unwrap().guarded_budget = 2;
    });
    let agent = agent(&kube, false);
    let outcome = agent
        .handle(
            &signed(action(drain_node("ip-10-0-1-17.ec2.internal"))),
            OffsetDateTime::now_utc(),
        )
        .await;
    release.await.unwrap();
    assert!(
        matches!(outcome, Outcome::Done { ref detail, .. } if detail.contains("4 evicted")),
        "{outcome:?}"
    );
    let evictions = kube
        .requests()
        .iter()
        .filter(|r| r.ends_with("/db-1/eviction"))
        .count();
    assert!(
        evictions >= 2,
        "the blocked eviction was retried ({evictions} attempts)"
    );
}

#[tokio::test]
async fn drain_reports_pods_left_when_the_deadline_comes() {
    let kube = Cluster::start().await;
    guard(&kube, &["db-1"], 0);
    let agent = agent(&kube, false);
    let mut short = action(drain_node("ip-10-0-1-17.ec2.internal"));
    short.not_after = OffsetDateTime::now_utc() + Duration::seconds(2);
    let started = std::time::Instant::now();
    let outcome = agent
        .handle(&signed(short), OffsetDateTime::now_utc())
        .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the drain stops at its deadline"
    );
    match outcome {
        Outcome::Failed {
            reason,
            retryable: false,
            pods_left,
            ..
        } => {
            assert!(
                reason.contains("shop/db-1 (eviction blocked by a PodDisruptionBudget)"),
                "{reason}"
            );
            assert_eq!(
                pods_left.keys().collect::<Vec<_>>(),
                ["shop/db-1"],
                "the pods left travel to the API as a map"
            );
            assert!(
                reason.contains("2 evicted"),
                "the unguarded pods still moved: {reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The cluster's agent queue on the local stack.
async fn agent_queue(stack: &LocalStack) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let queue_url = sqs
        .create_queue()
        .queue_name("spotwise-agent-c1")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (sqs, queue_url)
}

#[tokio::test]
async fn worker_executes_queued_actions_and_removes_finished_messages() {
    let stack = LocalStack::start();
    let kube = Cluster::start().await;
    let (sqs, queue_url) = agent_queue(&stack).await;
    let node = "ip-10-0-1-17.ec2.internal";

    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(signed(action(cordon_node(node))))
        .send()
        .await
        .unwrap();
    let mut forged = action(cordon_node("ip-10-0-2-9.ec2.internal"));
    forged.signature = "00".repeat(32);
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(serde_json::to_string(&forged).unwrap())
        .send()
        .await
        .unwrap();

    let agent = agent(&kube, false);
    let worker = QueueWorker::new(sqs.clone(), &queue_url).with_wait_seconds(1);
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.extend(worker.poll_once(&agent).await.unwrap());
        if outcomes.len() == 2 {
            break;
        }
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Done { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Rejected { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(kube.node(node)["spec"]["unschedulable"], true);
    assert_eq!(
        kube.node("ip-10-0-2-9.ec2.internal")["spec"].get("unschedulable"),
        None
    );

    assert_eq!(
        stack.queue_depth(&queue_url).await,
        (0, 0),
        "both messages deleted"
    );

    // Shutdown future stops the loop.
    worker.run(&agent, async {}).await;
}

#[tokio::test]
async fn on_shutdown_the_action_in_hand_finishes_and_the_rest_of_the_batch_is_handed_back() {
    let stack = LocalStack::start();
    let kube = Cluster::start().await;
    let (sqs, queue_url) = agent_queue(&stack).await;
    let nodes = ["ip-10-0-1-17.ec2.internal", "ip-10-0-2-9.ec2.internal"];
    for node in nodes {
        let cordon = action(cordon_node(node));
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(signed(cordon))
            .send()
            .await
            .unwrap();
    }

    // The pod is told to stop while the first action of the batch runs.
    let cordoned = |state: &Arc<Mutex<KubeState>>| {
        let cluster = state.lock().unwrap();
        nodes
            .iter()
            .filter(|n| cluster.nodes[**n]["spec"]["unschedulable"] == true)
            .count()
    };
    let watched = kube.state.clone();
    let shutdown = async move {
        while cordoned(&watched) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let agent = agent(&kube, false);
    QueueWorker::new(sqs.clone(), &queue_url)
        .with_wait_seconds(1)
        .run(&agent, shutdown)
        .await;

    assert_eq!(
        cordoned(&kube.state),
        1,
        "one action finished, the other never started"
    );
    assert_eq!(
        stack.queue_depth(&queue_url).await,
        (1, 0),
        "the unstarted action is visible again at once, the finished one deleted"
    );
}

/// A stand-in for the Auto Scaling API (query protocol) that records each call's form body.
async fn fake_autoscaling() -> (
    aws_sdk_autoscaling::Client,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = calls.clone();
    let app = Router::new().fallback(move |body: String| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(body);
            (
                StatusCode::OK,
                [("content-type", "text/xml")],
                "<CompleteLifecycleActionResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\">\
                 <CompleteLifecycleActionResult/><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>\
                 </CompleteLifecycleActionResponse>",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = aws_sdk_autoscaling::Config::builder()
        .behavior_version(aws_sdk_autoscaling::config::BehaviorVersion::latest())
        .region(aws_sdk_autoscaling::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
            "a", "b", None, None, "test",
        ))
        .build();
    (
        aws_sdk_autoscaling::Client::from_conf(config),
        calls,
        server,
    )
}

#[tokio::test]
async fn drain_for_an_asg_hook_completes_the_lifecycle_action() {
    let kube = Cluster::start().await;
    let (asg, calls, server) = fake_autoscaling().await;
    let agent = agent(&kube, false).with_autoscaling(asg);
    let drain = ActionSpec::Drain {
        node: "ip-10-0-1-17.ec2.internal".into(),
        taint: None,
        lifecycle_hook: Some(LifecycleHook {
            auto_scaling_group: "eks-workers".into(),
            hook_name: "spotwise-drain".into(),
            token: "71514b9d-6a40-4b26-8523-05e7ee35fa40".into(),
            instance_id: "i-0b662ef9931388ba0".into(),
        }),
    };
    let outcome = agent
        .handle(&signed(action(drain)), OffsetDateTime::now_utc())
        .await;
    server.abort();
    assert!(
        matches!(outcome, Outcome::Done { ref detail, .. } if detail.contains("lifecycle action completed")),
        "{outcome:?}"
    );
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    for part in [
        "Action=CompleteLifecycleAction",
        "LifecycleActionResult=CONTINUE",
        "AutoScalingGroupName=eks-workers",
        "LifecycleHookName=spotwise-drain",
    ] {
        assert!(calls[0].contains(part), "{part} missing from {}", calls[0]);
    }
}

/// A stand-in for the Spotwise API's agent routes, which can be taken down and brought back.
#[derive(Default)]
struct ApiState {
    down: bool,
    results: Vec<(String, Value)>,
    heartbeats: Vec<Value>,
    snapshots: Vec<Value>,
    cancelled: Vec<String>,
}

struct FakeApi {
    url: String,
    state: Arc<Mutex<ApiState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const AGENT_KEY: &str = "swk_0123456789ab_agent";

impl FakeApi {
    async fn start() -> Self {
        let state: Arc<Mutex<ApiState>> = Arc::default();
        type S = State<Arc<Mutex<ApiState>>>;
        let check = |s: &ApiState, headers: &axum::http::HeaderMap| -> Option<StatusCode> {
            if s.down {
                return Some(StatusCode::SERVICE_UNAVAILABLE);
            }
            (headers.get("authorization").and_then(|v| v.to_str().ok())
                != Some(&format!("Bearer {AGENT_KEY}")))
            .then_some(StatusCode::UNAUTHORIZED)
        };
        let app =
            Router::new()
                .route(
                    "/v1/agent/actions/{id}/result",
                    axum::routing::post(
                        move |State(s): S,
                              Path(id): Path<String>,
                              headers: axum::http::HeaderMap,
                              Json(body): Json<Value>| async move {
                            let mut s = s.lock().unwrap();
                            if let Some(code) = check(&s, &headers) {
                                return code;
                            }
                            if id == "unknown" {
                                return StatusCode::NOT_FOUND;
                            }
                            s.results.push((id, body));
                            StatusCode::OK
                        },
                    ),
                )
                .route(
                    "/v1/agent/actions/{id}",
                    get(
                        move |State(s): S,
                              Path(id): Path<String>,
                              headers: axum::http::HeaderMap| async move {
                            let s = s.lock().unwrap();
                            if let Some(code) = check(&s, &headers) {
                                return (code, Json(json!({})));
                            }
                            let status = if s.cancelled.contains(&id) {
                                "cancelled"
                            } else if s.results.iter().any(|(done, _)| done == &id) {
                                "succeeded"
                            } else {
                                "queued"
                            };
                            (StatusCode::OK, Json(json!({"status": status})))
                        },
                    ),
                )
                .route(
                    "/v1/agent/heartbeat",
                    axum::routing::post(
                        move |State(s): S,
                              headers: axum::http::HeaderMap,
                              Json(body): Json<Value>| async move {
                            let mut s = s.lock().unwrap();
                            if let Some(code) = check(&s, &headers) {
                                return code;
                            }
                            s.heartbeats.push(body);
                            StatusCode::NO_CONTENT
                        },
                    ),
                )
                .route(
                    "/v1/agent/snapshot",
                    axum::routing::put(
                        move |State(s): S,
                              headers: axum::http::HeaderMap,
                              Json(body): Json<Value>| async move {
                            let mut s = s.lock().unwrap();
                            if let Some(code) = check(&s, &headers) {
                                return code;
                            }
                            s.snapshots.push(body);
                            StatusCode::OK
                        },
                    ),
                )
                .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, server }
    }

    fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
}

fn reporter(api: &FakeApi, buffer: Option<std::path::PathBuf>) -> Arc<Reporter> {
    Arc::new(Reporter::new(&api.url, AGENT_KEY.into(), buffer, Metrics::new()).unwrap())
}

fn report(detail: &str) -> ActionReport {
    ActionReport {
        outcome: ReportedOutcome::Succeeded,
        detail: detail.into(),
        pods_left: BTreeMap::new(),
        previous_replicas: None,
    }
}

#[tokio::test]
async fn results_outlive_an_unreachable_api_and_a_restart_and_arrive_in_order() {
    let api = FakeApi::start().await;
    let dir = std::env::temp_dir().join(format!("spotwise-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let buffer = dir.join("results.jsonl");
    let _ = std::fs::remove_file(&buffer);

    api.set_down(true);
    let first = reporter(&api, Some(buffer.clone()));
    first.result("a1", report("cordoned")).await;
    first.result("a2", report("drained")).await;
    assert_eq!(first.pending().len(), 2, "kept while the API is down");
    assert_eq!(std::fs::read_to_string(&buffer).unwrap().lines().count(), 2);
    drop(first);

    // A restarted agent finds them on disk and delivers them once the API is back.
    let restarted = reporter(&api, Some(buffer.clone()));
    assert_eq!(restarted.pending().len(), 2);
    assert_eq!(restarted.flush().await, 0, "still down");
    api.set_down(false);
    assert_eq!(restarted.flush().await, 2);
    let delivered: Vec<String> = api
        .state
        .lock()
        .unwrap()
        .results
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(delivered, ["a1", "a2"]);
    assert!(restarted.pending().is_empty());
    assert_eq!(std::fs::read_to_string(&buffer).unwrap(), "");

    // A result the API refuses for good is dropped rather than blocking the others.
    restarted.result("unknown", report("?")).await;
    restarted.result("a3", report("labelled")).await;
    assert!(restarted.pending().is_empty());
    assert_eq!(api.state.lock().unwrap().results.last().unwrap().0, "a3");

    // Nothing listening at all is the same as down.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let nowhere = Reporter::new(&closed, AGENT_KEY.into(), None, Metrics::new()).unwrap();
    nowhere.result("a4", report("x")).await;
    assert_eq!(nowhere.pending().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_agent_reports_outcomes_and_skips_cancelled_actions() {
    let kube = Cluster::start().await;
    let api = FakeApi::start().await;
    let metrics = Metrics::new();
    let agent = agent(&kube, false)
        .with_reporter(reporter(&api, None))
        .with_metrics(metrics.clone());
    let now = OffsetDateTime::now_utc();
    let node = "ip-10-0-1-17.ec2.internal";

    let mut cancelled = action(cordon_node(node));
    cancelled.action_id = "withdrawn".into();
    api.state.lock().unwrap().cancelled.push("withdrawn".into());
    assert_eq!(
        agent.handle(&signed(cancelled), now).await,
        Outcome::Cancelled {
            action_id: "withdrawn".into()
        }
    );
    assert_eq!(
        kube.node(node)["spec"].get("unschedulable"),
        None,
        "not executed"
    );

    let mut cordon = action(cordon_node(node));
    cordon.action_id = "c1".into();
    assert!(matches!(
        agent.handle(&signed(cordon), now).await,
        Outcome::Done { .. }
    ));
    let mut late = action(cordon_node(node));
    late.action_id = "late".into();
    late.issued_at = now - Duration::minutes(3);
    late.not_after = now - Duration::seconds(1);
    assert!(matches!(
        agent.handle(&signed(late), now).await,
        Outcome::Rejected {
            action_id: Some(_),
            ..
        }
    ));
    let mut forged = action(cordon_node(node));
    forged.action_id = "forged".into();
    forged.signature = "00".repeat(32);
    assert!(matches!(
        agent
            .handle(&serde_json::to_string(&forged).unwrap(), now)
            .await,
        Outcome::Rejected {
            action_id: None,
            ..
        }
    ));

    let results = api.state.lock().unwrap().results.clone();
    let reported: Vec<(&str, &str)> = results
        .iter()
        .map(|(id, r)| (id.as_str(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reported,
        [("c1", "succeeded"), ("late", "failed")],
        "forged actions are not reported against real ids"
    );
    let text = metrics.render();
    assert!(
        text.contains("spotwise_agent_actions_total{outcome=\"cancelled\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("spotwise_agent_actions_total{outcome=\"rejected\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn heartbeats_and_snapshots_reach_the_api() {
    let kube = Cluster::start().await;
    let api = FakeApi::start().await;
    let agent = agent(&kube, false).with_reporter(reporter(&api, None));
    agent
        .report_loop(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(3600),
            tokio::time::sleep(std::time::Duration::from_millis(180)),
        )
        .await;
    let state = api.state.lock().unwrap();
    assert!(
        state.heartbeats.len() >= 2,
        "one per period: {}",
        state.heartbeats.len()
    );
    assert_eq!(state.snapshots.len(), 1, "one per snapshot period");
    let snapshot = &state.snapshots[0];
    let nodes = snapshot["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "read across pages");
    let spot = nodes
        .iter()
        .find(|n| n["name"] == "ip-10-0-1-17.ec2.internal")
        .unwrap();
    assert_eq!(
        (&spot["instance_id"], &spot["capacity_type"], &spot["cpu_m"]),
        (&json!("i-0b662ef9931388ba0"), &json!("spot"), &json!(1930))
    );
    assert_eq!(snapshot["pdbs"].as_array().unwrap().len(), 1);
    let pods = snapshot["pods"].as_array().unwrap().len()
        + snapshot["daemon_pods"].as_array().unwrap().len();
    assert!(
        pods >= 4,
        "running pods, finished ones left out: {snapshot}"
    );
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    use tower::ServiceExt;
    let metrics = Metrics::new();
    let app = spotwise_agent::metrics::router(metrics.clone());
    let health = app
        .clone()
        .oneshot(
            axum::http::Request::get("/healthz")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "healthy while starting");
    assert!(
        !metrics.healthy(OffsetDateTime::now_utc() + Duration::minutes(5)),
        "no poll for minutes"
    );
    metrics.polled(OffsetDateTime::now_utc() + Duration::minutes(5));
    assert!(metrics.healthy(OffsetDateTime::now_utc() + Duration::minutes(5)));
    let page = app
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/plain; version=0.0.4");
    let text = String::from_utf8(
        axum::body::to_bytes(page.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("# TYPE spotwise_agent_results_pending gauge"),
        "{text}"
    );
}

#[tokio::test]
async fn the_secret_file_holds_the_hex_the_platform_hands_out_and_signs_with() {
    let dir = std::env::temp_dir().join(format!("spotwise-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster-secret");
    // As `kubectl create secret --from-literal` stores it, with a trailing newline.
    std::fs::write(&file, format!("{}\n", hex::encode(SECRET))).unwrap();
    let key = read_cluster_secret(&file).unwrap();
    assert_eq!(
        key, SECRET,
        "the decoded bytes are the key the platform signs with"
    );

    let kube = Cluster::start().await;
    let agent = Agent::new(
        ClusterId::new("c1").unwrap(),
        key,
        kube.client.clone(),
        false,
    );
    let node = "ip-10-0-1-17.ec2.internal";
    let outcome = agent
        .handle(
            &signed(action(cordon_node(node))),
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");

    std::fs::write(&file, "not-hex").unwrap();
    assert!(matches!(
        read_cluster_secret(&file),
        Err(SecretError::NotHex { .. })
    ));
    std::fs::write(&file, " \n").unwrap();
    assert!(matches!(
        read_cluster_secret(&file),
        Err(SecretError::Empty { .. })
    ));
    assert!(matches!(
        read_cluster_secret(&dir.join("missing")),
        Err(SecretError::Read { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_redelivered_action_is_executed_once_even_after_a_restart() {
    let kube = Cluster::start().await;
    let api = FakeApi::start().await;
    let scale = {
        let mut a = action(scale_web(0));
        a.action_id = "sleep-web".into();
        signed(a)
    };
    let now = OffsetDateTime::now_utc();
    let first = agent(&kube, false).with_reporter(reporter(&api, None));
    assert!(
        matches!(
            first.handle(&scale, now).await,
            Outcome::Done {
                previous_replicas: Some(3),
                ..
            }
        ),
        "scaled from 3"
    );
    // The same message again (its delete was lost): not run, so the count to restore stays 3.
    assert_eq!(
        first.handle(&scale, now).await,
        Outcome::Duplicate {
            action_id: "sleep-web".into()
        }
    );
    // A restarted agent has forgotten it; the platform's record says it is done.
    let restarted = agent(&kube, false).with_reporter(reporter(&api, None));
    assert_eq!(
        restarted.handle(&scale, now).await,
        Outcome::Duplicate {
            action_id: "sleep-web".into()
        }
    );
    let patches = kube
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH") && r.ends_with("/web/scale"))
        .count();
    assert_eq!(patches, 1, "scaled once");
    let results = api.state.lock().unwrap().results.clone();
    assert_eq!(results.len(), 1, "reported once: {results:?}");
    assert_eq!(results[0].1["previous_replicas"], 3);
}

#[tokio::test]
async fn refused_messages_reach_the_api_with_the_next_heartbeat() {
    let kube = Cluster::start().await;
    let api = FakeApi::start().await;
    let agent = agent(&kube, false).with_reporter(reporter(&api, None));
    let now = OffsetDateTime::now_utc();
    let node = "ip-10-0-1-17.ec2.internal";
    let mut forged = action(drain_node(node));
    forged.signature = "00".repeat(32);
    agent
        .handle(&serde_json::to_string(&forged).unwrap(), now)
        .await;
    let mut elsewhere = action(cordon_node(node));
    elsewhere.cluster_id = ClusterId::new("c2").unwrap();
    agent.handle(&signed(elsewhere), now).await;
    agent.handle("{not json", now).await;

    // The first beat is lost: the refusals wait for the next one.
    api.set_down(true);
    agent
        .report_loop(
            std::time::Duration::from_millis(40),
            std::time::Duration::from_secs(3600),
            tokio::time::sleep(std::time::Duration::from_millis(60)),
        )
        .await;
    api.set_down(false);
    agent
        .report_loop(
            std::time::Duration::from_millis(40),
            std::time::Duration::from_secs(3600),
            tokio::time::sleep(std::time::Duration::from_millis(100)),
        )
        .await;
    let beats = api.state.lock().unwrap().heartbeats.clone();
    let rejected: Vec<String> = beats
        .iter()
        .flat_map(|b| b["rejected"].as_array().cloned().unwrap_or_default())
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rejected.len(), 3, "each refusal told once: {rejected:?}");
    assert!(rejected[0].contains("signature"), "{rejected:?}");
    assert!(rejected[1].contains("c2"), "{rejected:?}");
    assert!(rejected[2].contains("unreadable"), "{rejected:?}");
    assert_eq!(
        kube.node(node)["spec"].get("unschedulable"),
        None,
        "nothing executed"
    );
}

#[tokio::test]
async fn a_drain_waits_for_evicted_pods_to_terminate_before_completing() {
    let kube = Cluster::start().await;
    {
        let mut cluster = kube.state();
        let (key, value) = pod(
            "shop",
            "slow-1",
            "ip-10-0-1-17.ec2.internal",
            "ReplicaSet",
            json!({"metadata": {"labels": {"app": "slow"}}}),
        );
        cluster.pods.insert(key, value);
        cluster.slow_lists = 2;
    }
    let agent = agent(&kube, false);
    let node = "ip-10-0-1-17.ec2.internal";
    let outcome = agent
        .handle(&signed(action(drain_node(node))), OffsetDateTime::now_utc())
        .await;
    assert!(
        matches!(outcome, Outcome::Done { ref detail, .. } if detail.contains("3 evicted")),
        "{outcome:?}"
    );
    assert!(
        !kube.pods_on(node).contains(&"shop/slow-1".to_owned()),
        "done only once the pod is gone"
    );
    let lists = kube
        .requests()
        .iter()
        .filter(|r| r.as_str() == "GET /api/v1/pods")
        .count();
    assert!(lists >= 3, "listed until the pod was gone ({lists} lists)");

    // A pod still shutting down at the deadline is reported as left.
    {
        let mut cluster = kube.state();
        let (key, value) = pod(
            "shop",
            "slow-2",
            node,
            "ReplicaSet",
            json!({"metadata": {"labels": {"app": "slow"}}}),
        );
        cluster.pods.insert(key, value);
        cluster.slow_lists = 1000;
    }
    let mut short = action(drain_node(node));
    short.not_after = OffsetDateTime::now_utc() + Duration::seconds(2);
    match agent
        .handle(&signed(short), OffsetDateTime::now_utc())
        .await
    {
        Outcome::Failed { pods_left, .. } => assert_eq!(
            pods_left.get("shop/slow-2").map(String::as_str),
            Some("evicted, still terminating at the deadline")
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_rest_of_a_batch_stays_hidden_while_a_long_action_runs() {
    let stack = LocalStack::start();
    let kube = Cluster::start().await;
    guard(&kube, &["db-1"], 0);
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let queue_url = sqs
        .create_queue()
        .queue_name("spotwise-agent-c1-batch")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "2",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let node = "ip-10-0-1-17.ec2.internal";
    let mut drain = action(drain_node(node));
    drain.not_after = OffsetDateTime::now_utc() + Duration::seconds(5);
    let cordon = action(cordon_node("ip-10-0-2-9.ec2.internal"));
    sqs.send_message_batch()
        .queue_url(&queue_url)
        .entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id("drain")
                .message_body(signed(drain))
                .build()
                .unwrap(),
        )
        .entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id("cordon")
                .message_body(signed(cordon))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let agent = agent(&kube, false);
    let worker = QueueWorker::new(sqs.clone(), &queue_url)
        .with_wait_seconds(1)
        .with_extend_every(std::time::Duration::from_millis(500));
    // Another consumer polls while the drain (blocked by its PDB until the deadline) runs.
    let other = async {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        sqs.receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
            .len()
    };
    let (outcomes, stolen) = tokio::join!(worker.poll_once(&agent), other);
    let outcomes = outcomes.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(
        stolen, 0,
        "both messages stayed hidden past the 2 s timeout"
    );
}
