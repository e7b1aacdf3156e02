//! The agent routes (`/v1/agent/...`), actions, and installing an agent on a cluster.

use super::*;

#[tokio::test]
async fn agent_reports_reach_the_cluster_and_its_actions() {
    let api = api().await;
    api.seed_cluster(None).await;
    let agent = api.agent_key().await;
    let cluster = prod_cluster();

    let beat = api
        .post(
            "/v1/agent/heartbeat",
            &agent,
            json!({"agent_version": "0.1.0", "dry_run": false, "rejected": [
                {"reason": "bad signature", "at": "2026-12-01T10:00:00Z"}
            ]}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::NO_CONTENT, "{}", beat.body);
    let told: Vec<Notification> = api.stack.drain(api.state.notifications.url()).await;
    assert_eq!(
        told.iter()
            .map(|n| (n.event_type.as_str(), n.severity))
            .collect::<Vec<_>>(),
        [("action_rejected", Severity::Warning)],
        "a refused message is a security signal"
    );
    assert_eq!(
        api.post(
            "/v1/agent/heartbeat",
            &api.admin,
            json!({"agent_version": "x", "dry_run": false})
        )
        .await
        .status,
        StatusCode::FORBIDDEN,
        "user keys are not agents"
    );
    let rejection = |reason: String| json!({"reason": reason, "at": "2026-12-01T10:00:00Z"});
    for (body, field) in [
        (
            json!({"agent_version": "0.1.0", "dry_run": false,
                "rejected": vec![rejection("bad".into()); 51]}),
            "rejected",
        ),
        (
            json!({"agent_version": "0.1.0", "dry_run": false,
                "rejected": [rejection("x".repeat(1_001))]}),
            "rejected[0].reason",
        ),
        (
            json!({"agent_version": "v".repeat(65), "dry_run": false}),
            "agent_version",
        ),
    ] {
        let refused = api.post("/v1/agent/heartbeat", &agent, body).await;
        assert_eq!(
            (refused.status, &refused.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{}",
            refused.body
        );
    }
    let snapshot = fixture_snapshot();
    let uploaded = api
        .upload_snapshot(&agent, &serde_json::to_value(&snapshot).unwrap())
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.body);
    assert_eq!(
        uploaded.body["nodes"].as_u64(),
        Some(snapshot.nodes.len() as u64)
    );

    let detail = api
        .get(&format!("/v1/clusters/{cluster}"), &api.admin)
        .await;
    assert_eq!(detail.body["agent"]["agent_version"], "0.1.0");
    assert_eq!(detail.body["snapshot"]["nodes"], snapshot.nodes.len());
    // Each node's load is the sum of the requests of the pods the snapshot places on it.
    for node in &snapshot.nodes {
        let listed = detail.body["snapshot"]["node_list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node.name.as_str())
            .unwrap();
        let on_node: Vec<_> = snapshot
            .pods
            .iter()
            .chain(&snapshot.daemon_pods)
            .filter(|p| p.spec.node.as_deref() == Some(node.name.as_str()))
            .collect();
        assert_eq!(listed["cpu_allocatable_m"], node.cpu_m);
        assert_eq!(
            listed["cpu_requested_m"],
            on_node.iter().map(|p| p.spec.cpu_m).sum::<u64>()
        );
        assert_eq!(
            listed["memory_requested_mib"],
            on_node.iter().map(|p| p.spec.mem_mib).sum::<u64>()
        );
        assert_eq!(listed["pods"], on_node.len());
    }
    let used: u64 = detail.body["snapshot"]["node_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["cpu_used_m"].as_u64())
        .sum();
    let expected_used: u64 = snapshot
        .pods
        .iter()
        .chain(&snapshot.daemon_pods)
        .filter(|p| p.spec.node.is_some())
        .filter_map(|p| p.usage.map(|u| u.cpu_m))
        .sum();
    assert_eq!(used, expected_used);
    let kinds: Vec<&str> = detail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let mut kinds = kinds;
    // The heartbeat's two events can share a millisecond, and so their order.
    kinds[1..].sort_unstable();
    assert_eq!(kinds, ["snapshot", "action_rejected", "agent_online"]);

    api.seed_action("a1", &cluster).await;
    api.seed_action("a2", &cluster).await;
    api.seed_action(
        "elsewhere",
        &ClusterId::new("111122223333.us-east-1.other").unwrap(),
    )
    .await;
    assert_eq!(
        api.get("/v1/agent/actions/a1", &agent).await.body["status"],
        "queued"
    );
    assert_eq!(
        api.get("/v1/agent/actions/elsewhere", &agent).await.status,
        StatusCode::NOT_FOUND,
        "another cluster's action"
    );

    let cancelled = api
        .post("/v1/actions/a1/cancel", &api.admin, json!({}))
        .await;
    assert_eq!(
        (cancelled.status, &cancelled.body["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    assert_eq!(
        api.get("/v1/agent/actions/a1", &agent).await.body["status"],
        "cancelled"
    );

    let report = json!({"outcome": "succeeded", "detail": "node drained: 4 evicted", "pods_left": {"shop/cart-0": "PDB"}});
    let done = api
        .post("/v1/agent/actions/a2/result", &agent, report.clone())
        .await;
    assert_eq!(
        (done.status, &done.body["status"]),
        (StatusCode::OK, &json!("succeeded")),
        "{}",
        done.body
    );
    assert!(
        done.body["status_reason"]
            .as_str()
            .unwrap()
            .contains("shop/cart-0 (PDB)")
    );
    assert_eq!(
        api.post("/v1/agent/actions/a2/result", &agent, report)
            .await
            .status,
        StatusCode::OK,
        "a repeat changes nothing"
    );
    let told: Vec<Notification> = api.stack.drain(api.state.notifications.url()).await;
    assert_eq!(told.len(), 1, "told once, repeat or not: {told:?}");
    assert_eq!(
        (told[0].event_type.as_str(), &told[0].labels["outcome"]),
        ("action_result", &"succeeded".to_owned())
    );
    let late_cancel = api
        .post("/v1/actions/a2/cancel", &api.admin, json!({}))
        .await;
    assert_eq!(late_cancel.status, StatusCode::CONFLICT);
    let listed = api
        .get(&format!("/v1/actions?cluster={cluster}"), &api.admin)
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.get("/v1/actions/a2", &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn installing_an_agent_gives_its_cluster_a_queue_a_secret_and_a_key() {
    let api = api().await;
    api.seed_cluster(None).await;
    let cluster = prod_cluster();
    let tenant = TenantId::new("t1").unwrap();
    let path = format!("/v1/clusters/{cluster}/agent");
    let role = "arn:aws:iam::111122223333:role/SpotwiseAgent";

    let operator = api.key("operator").await;
    assert_eq!(
        api.post(&path, &operator, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.post(&path, &api.other_admin, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    let foreign = api
        .post(
            &path,
            &api.admin,
            json!({"agent_role_arn": "arn:aws:iam::999999999999:role/agent"}),
        )
        .await;
    assert_eq!(
        (foreign.status, &foreign.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("agent_role_arn")),
        "only a role in the cluster's own account may read its queue"
    );

    let installed = api
        .post(&path, &api.admin, json!({"agent_role_arn": role}))
        .await;
    assert_eq!(installed.status, StatusCode::CREATED, "{}", installed.body);
    let queue_url = installed.body["queue_url"].as_str().unwrap().to_owned();
    assert!(queue_url.ends_with(".fifo"), "{queue_url}");
    let policy = api
        .state
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::Policy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::Policy]
        .clone();
    assert!(
        policy.contains(role) && policy.contains("sqs:ReceiveMessage"),
        "{policy}"
    );

    // The platform now signs with the secret the manifest holds, and queues to this queue.
    let secret = installed.body["cluster_secret"].as_str().unwrap();
    let channel =
        spotwise_store::actions::channel(&api.state.store, &api.state.vault, &tenant, &cluster)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        (channel.queue_url.as_str(), channel.secret),
        (queue_url.as_str(), hex::decode(secret).unwrap())
    );
    let agent_key = installed.body["agent_key"].as_str().unwrap().to_owned();
    assert_eq!(
        api.post(
            "/v1/agent/heartbeat",
            &agent_key,
            json!({"agent_version": "0.1.0", "dry_run": false})
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );

    let again = api.post(&path, &api.admin, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let rotated = api
        .post(
            &path,
            &api.admin,
            json!({"agent_role_arn": role, "rotate": true}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    assert_eq!(rotated.body["queue_url"], queue_url.as_str(), "same queue");
    assert_ne!(rotated.body["cluster_secret"], secret, "a new secret");
    let beat = json!({"agent_version": "0.1.0", "dry_run": false});
    assert_eq!(
        api.post("/v1/agent/heartbeat", &agent_key, beat.clone())
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "the old key went with the old secret"
    );
    assert_eq!(
        api.post(
            "/v1/agent/heartbeat",
            rotated.body["agent_key"].as_str().unwrap(),
            beat
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );

    let audit = api.get("/v1/audit", &api.admin).await.body.to_string();
    assert!(audit.contains("cluster.agent_install") && audit.contains("cluster.agent_rotate"));
    assert!(
        !audit.contains(secret),
        "the secret is never in the audit log"
    );
    assert!(!audit.contains(&agent_key));
}

#[tokio::test]
async fn snapshot_uploads_go_to_storage_under_the_tenant_and_unchanged_ones_are_skipped() {
    let api = api().await;
    api.seed_cluster(None).await;
    let agent = api.agent_key().await;
    let snapshot = serde_json::to_value(fixture_snapshot()).unwrap();
    let tickets = "/v1/agent/snapshot-uploads";
    for (body, field) in [
        (json!({"sha256": "ab", "size": 10}), "sha256"),
        (json!({"sha256": "A".repeat(64), "size": 10}), "sha256"),
        (json!({"sha256": "a".repeat(64), "size": 0}), "size"),
        (
            json!({"sha256": "a".repeat(64), "size": 32 * 1024 * 1024 + 1}),
            "size",
        ),
    ] {
        let refused = api.post(tickets, &agent, body).await;
        assert_eq!(
            (refused.status, &refused.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{}",
            refused.body
        );
    }
    let viewer = api.key("viewer").await;
    assert_eq!(
        api.post(
            tickets,
            &viewer,
            json!({"sha256": "a".repeat(64), "size": 10})
        )
        .await
        .status,
        StatusCode::FORBIDDEN,
        "only an agent key uploads snapshots"
    );

    let ticket = api
        .post(
            tickets,
            &agent,
            json!({"sha256": "a".repeat(64), "size": 10}),
        )
        .await;
    assert_eq!(ticket.body["status"], "upload", "{}", ticket.body);
    let url = ticket.body["url"].as_str().unwrap();
    assert!(
        url.contains("/tenants/t1/clusters/111122223333.us-east-1.prod/snapshots/"),
        "{url}"
    );
    let id = ticket.body["upload_id"].as_str().unwrap();
    assert_eq!(
        api.confirm_upload(&agent, id).await.status,
        StatusCode::NOT_FOUND,
        "confirmed before anything was uploaded"
    );
    spotwise_testkit::upload::put_presigned(&ticket.body, b"not gzip".to_vec()).await;
    let refused = api.confirm_upload(&agent, id).await;
    assert_eq!(
        (refused.status, &refused.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("snapshot")),
        "{}",
        refused.body
    );
    assert_eq!(
        api.confirm_upload(&agent, id).await.status,
        StatusCode::NOT_FOUND,
        "a refused object is deleted"
    );

    let first = api.upload_snapshot(&agent, &snapshot).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let first_id = first.body["snapshot_id"].as_str().unwrap().to_owned();
    let again = api.confirm_upload(&agent, &first_id).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::OK, &first.body),
        "confirming twice changes nothing"
    );
    let unchanged = api.upload_snapshot(&agent, &snapshot).await;
    assert_eq!(
        (&unchanged.body["status"], &unchanged.body["snapshot_id"]),
        (&json!("unchanged"), &json!(first_id)),
        "{}",
        unchanged.body
    );

    let mut without_nodes = snapshot.clone();
    without_nodes["nodes"] = json!([]);
    let refused = api.upload_snapshot(&agent, &without_nodes).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nodes: a cluster snapshot has at least one node"),
        "{}",
        refused.body
    );

    let t2 = TenantId::new("t2").unwrap();
    api.state
        .store
        .put(
            &Item::new(
                keys::cluster(&t2, &prod_cluster()),
                records::cluster(&t2, &prod_cluster(), None),
            ),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let other_agent = api.agent_key_by(&api.other_admin).await;
    let theirs = api.confirm_upload(&other_agent, &first_id).await;
    assert_eq!(
        theirs.status,
        StatusCode::NOT_FOUND,
        "another tenant's agent cannot confirm this tenant's object, even for a cluster of the same name"
    );
}
