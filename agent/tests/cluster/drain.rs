//! Draining a node: what is evicted, PodDisruptionBudgets, deadlines, termination and ASG hooks.

use super::*;

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

/// A stand-in for the Auto Scaling API (query protocol) that records each call's form body.
pub(super) async fn fake_autoscaling() -> (
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
