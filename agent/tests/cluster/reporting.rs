//! The agent and the Spotwise API: results, cancellations, heartbeats, snapshots and refusals.

use super::*;

/// A stand-in for the Spotwise API's agent routes, which can be taken down and brought back.
#[derive(Default)]
struct ApiState {
    down: bool,
    results: Vec<(String, Value)>,
    heartbeats: Vec<Value>,
    /// Confirmed snapshots, and ones stored but not yet confirmed.
    snapshots: Vec<Value>,
    uploaded: Vec<Value>,
    /// The server's own address, for the upload URLs it hands out.
    base: String,
    cancelled: Vec<String>,
    /// Status checks of these ids answer 404: the platform does not know them.
    unknown: Vec<String>,
    /// Status checks of these ids answer 403: another tenant's, or a revoked key's.
    forbidden: Vec<String>,
    /// What later signals added to these actions, as the status check answers it.
    amendments: BTreeMap<String, Value>,
    /// Status checks answered, by action id.
    status_checks: Vec<String>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<ApiState>> = Arc::new(Mutex::new(ApiState {
            base: url.clone(),
            ..ApiState::default()
        }));
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
                            let mut s = s.lock().unwrap();
                            if let Some(code) = check(&s, &headers) {
                                return (code, Json(json!({})));
                            }
                            s.status_checks.push(id.clone());
                            if s.unknown.contains(&id) {
                                return (StatusCode::NOT_FOUND, Json(json!({})));
                            }
                            if s.forbidden.contains(&id) {
                                return (StatusCode::FORBIDDEN, Json(json!({})));
                            }
                            let status = if s.cancelled.contains(&id) {
                                "cancelled"
                            } else if s.results.iter().any(|(done, _)| done == &id) {
                                "succeeded"
                            } else {
                                "queued"
                            };
                            let mut answer = json!({"status": status});
                            if let Some(amendment) = s.amendments.get(&id) {
                                answer["amendment"] = amendment.clone();
                            }
                            (StatusCode::OK, Json(answer))
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
                    "/v1/agent/snapshot-uploads",
                    axum::routing::post(
                        move |State(s): S,
                              headers: axum::http::HeaderMap,
                              Json(body): Json<Value>| async move {
                            let s = s.lock().unwrap();
                            if let Some(code) = check(&s, &headers) {
                                return (code, Json(json!({})));
                            }
                            assert_eq!(body["sha256"].as_str().map(str::len), Some(64));
                            let id = format!("u{}", s.snapshots.len());
                            (StatusCode::OK, Json(json!({
                                "status": "upload",
                                "upload_id": id,
                                "url": format!("{}/storage/{id}", s.base),
                                "headers": {"content-type": "application/json", "content-encoding": "gzip"},
                                "expires_at": "2030-01-01T00:00:00Z",
                            })))
                        },
                    ),
                )
                // Storage: reached through the presigned URL, never with the agent key.
                .route(
                    "/storage/{id}",
                    axum::routing::put(
                        move |State(s): S,
                              headers: axum::http::HeaderMap,
                              body: axum::body::Bytes| async move {
                            assert!(headers.get("authorization").is_none(), "the agent key went to storage");
                            assert_eq!(headers["content-encoding"], "gzip");
                            let decoded = spotwise_core::snapshot_codec::decode(&body).unwrap();
                            s.lock().unwrap().uploaded.push(serde_json::to_value(decoded.snapshot).unwrap());
                            StatusCode::OK
                        },
                    ),
                )
                .route(
                    "/v1/agent/snapshot-uploads/{id}/confirm",
                    axum::routing::post(
                        move |State(s): S,
                              Path(id): Path<String>,
                              headers: axum::http::HeaderMap| async move {
                            let mut s = s.lock().unwrap();
                            if let Some(code) = check(&s, &headers) {
                                return (code, Json(json!({})));
                            }
                            let Some(snapshot) = s.uploaded.pop() else {
                                return (StatusCode::NOT_FOUND, Json(json!({})));
                            };
                            s.snapshots.push(snapshot);
                            (StatusCode::OK, Json(json!({"snapshot_id": id, "nodes": 2, "pods": 4})))
                        },
                    ),
                )
                .with_state(state.clone());
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
async fn only_actions_the_platform_confirms_are_executed() {
    let kube = Cluster::start().await;
    let api = FakeApi::start().await;
    let online = agent(&kube, false).with_reporter(reporter(&api, None));
    let now = OffsetDateTime::now_utc();
    let node = "ip-10-0-1-17.ec2.internal";
    let cordoned = || kube.node(node)["spec"].get("unschedulable").cloned();

    for (id, code) in [("gone", "404"), ("revoked", "403")] {
        let mut unconfirmed = action(cordon_node(node));
        unconfirmed.action_id = id.into();
        {
            let mut state = api.state.lock().unwrap();
            state.unknown.push("gone".into());
            state.forbidden.push("revoked".into());
        }
        match online.handle(&signed(unconfirmed), now).await {
            Outcome::Rejected {
                action_id: Some(rejected),
                reason,
            } => {
                assert_eq!(rejected, id);
                assert!(reason.contains(code), "{reason}");
            }
            other => panic!("{id}: {other:?}"),
        }
        assert_eq!(cordoned(), None, "{id} not executed");
    }

    // An API that refuses connections confirms nothing.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let offline = agent(&kube, false).with_reporter(Arc::new(
        Reporter::new(&closed, AGENT_KEY.into(), None, Metrics::new()).unwrap(),
    ));
    let mut held = action(cordon_node(node));
    held.action_id = "held".into();
    assert!(matches!(
        offline.handle(&signed(held), now).await,
        Outcome::Failed { retryable: true, ref reason, .. } if reason.contains("could not confirm")
    ));
    assert_eq!(
        cordoned(),
        None,
        "an ordinary action waits for the platform"
    );

    let mut warning = action(ActionSpec::Drain {
        node: node.into(),
        taint: Some(interruption_taint()),
        lifecycle_hook: None,
    });
    warning.action_id = "warning".into();
    assert!(matches!(
        offline.handle(&signed(warning.clone()), now).await,
        Outcome::Done { .. }
    ));
    assert_eq!(cordoned(), Some(json!(true)), "an interruption drain runs");

    let mut expired = warning;
    expired.action_id = "expired".into();
    expired.issued_at = now - Duration::minutes(3);
    expired.not_after = now - Duration::seconds(1);
    assert!(
        matches!(
            offline.handle(&signed(expired), now).await,
            Outcome::Rejected { .. }
        ),
        "but only within its own validity"
    );
}

#[tokio::test]
async fn heartbeats_and_snapshots_reach_the_api() {
    let kube = Cluster::start().await;
    {
        let mut state = kube.state();
        state.claims.push(
            json!({"metadata": {"name": "web-data", "namespace": "shop"},
            "spec": {"volumeName": "pvc-0a1b"}}),
        );
        state.volumes.push(
            json!({"metadata": {"name": "pvc-0a1b"}, "spec": {"nodeAffinity": {"required":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.ebs.csi.aws.com/zone",
             "operator": "In", "values": ["us-east-1b"]}]}]}}}}),
        );
        let web = state.pods.get_mut("shop/web-9").unwrap();
        web["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}}]);
        web["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    }
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
    let web = snapshot["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["spec"]["name"] == "shop/web-9")
        .unwrap();
    assert_eq!(
        web["spec"]["volumes"],
        json!([{"claim": "web-data", "zones": ["us-east-1b"]}]),
        "claims and volumes are read, so the planner keeps the pod in its volume's zone"
    );
    assert_eq!(web["spec"]["affinity"][0]["kind"], "anti_affinity", "{web}");
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

/// A spot warning arrives while the drain of an Auto Scaling scale-in (long deadline, blocked
/// by a PodDisruptionBudget) runs: the platform amends the drain with the warning's deadline,
/// and the drain stops at it instead of its own. A hook amended in completes after the drain.
#[tokio::test]
async fn a_drain_in_flight_follows_its_amendments() {
    let kube = Cluster::start().await;
    let api = FakeApi::start().await;
    let (asg, calls, server) = super::drain::fake_autoscaling().await;
    guard(&kube, &["db-1"], 0);
    let agent = agent(&kube, false)
        .with_reporter(reporter(&api, None))
        .with_autoscaling(asg)
        .with_amendment_poll(std::time::Duration::from_millis(100));
    let node = "ip-10-0-1-17.ec2.internal";
    let mut scale_in = action(drain_node(node));
    scale_in.action_id = "long-drain".into();
    scale_in.not_after = OffsetDateTime::now_utc() + Duration::minutes(30);

    let state = api.state.clone();
    let warning = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let deadline = OffsetDateTime::now_utc() + Duration::seconds(2);
        state.lock().unwrap().amendments.insert(
            "long-drain".into(),
            json!({
                "not_after": spotwise_core::rfc3339(deadline),
                "lifecycle_hook": {"auto_scaling_group": "eks-workers", "hook_name": "spotwise-drain",
                    "token": "71514b9d-6a40-4b26-8523-05e7ee35fa40", "instance_id": "i-0b662ef9931388ba0"}
            }),
        );
    });
    let started = std::time::Instant::now();
    let outcome = agent
        .handle(&signed(scale_in), OffsetDateTime::now_utc())
        .await;
    warning.await.unwrap();
    server.abort();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the drain stopped at the amended deadline, not its own 30 minutes"
    );
    let Outcome::Failed {
        reason, pods_left, ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(pods_left.keys().collect::<Vec<_>>(), ["shop/db-1"]);
    assert!(reason.contains("lifecycle action completed"), "{reason}");
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .any(|c| c.contains("Action=CompleteLifecycleAction")
                && c.contains("LifecycleActionToken=71514b9d-6a40-4b26-8523-05e7ee35fa40")),
        "{calls:?}"
    );
    let checks = api.state.lock().unwrap().status_checks.len();
    assert!(
        checks >= 3,
        "asked before, while and after the drain ({checks})"
    );
}
