//! `/v1/clusters/{id}/recommendations` and approving a plan.

use super::*;

pub(super) fn recommendation(revision: u64) -> Value {
    json!({
        "id": format!("rec{revision}"), "revision": revision, "tenant_id": "t1", "cluster_id": prod_cluster().to_string(),
        "trigger": "schedule", "mode": "recommend", "status": "proposed", "snapshot_id": "s1",
        "created_at": "2026-11-24T10:00:00Z", "cost_hr": 0.5,
        "summary": {"pods": 10, "placed_pods": 10, "nodes": 2, "spot_nodes": 1, "monthly_cost": 365.0,
            "on_demand_equivalent_monthly": 500.0, "current_monthly_cost": 600.0, "monthly_savings": 235.0,
            "spot_cost_share": 0.5, "spot_pod_share": 0.5, "spot_pools": 1, "risk_score": 10.0,
            "cpu_utilisation": 0.7, "mem_utilisation": 0.6, "explanation": []},
        "node_mix": [{"instance_type": "m5.large", "zone": "us-east-1a", "capacity_type": "spot",
            "nodes": 2, "pods": 5, "cost_hr": 0.07}],
        "unschedulable": [],
        "consolidation": {"current_cost_hr": 0.8, "after_cost_hr": 0.5, "budget": 1, "waves": [[0], [1]],
            "steps": [
                {"kind": "remove", "node": "ip-10-0-2-13.ec2.internal", "saving_hr": 0.1, "moves": [], "reason": "its pods fit elsewhere"},
                {"kind": "remove", "node": "ip-10-0-1-12.ec2.internal", "saving_hr": 0.2, "moves": [], "reason": "its pods fit elsewhere"}
            ],
            "blocked": []},
        "right_sizing": null, "pools_in_cooldown": [], "action_ids": []
    })
}

#[tokio::test]
async fn approving_the_newest_plan_starts_its_rollout() {
    let api = api().await;
    let tenant = TenantId::new("t1").unwrap();
    let cluster = prod_cluster();
    for revision in [1, 2] {
        let rec: spotwise_optimizer::recommendation::Recommendation =
            serde_json::from_value(recommendation(revision)).unwrap();
        api.state
            .store
            .put(
                &Item::new(keys::recommendation(&tenant, &cluster, revision), rec),
                PutCondition::Always,
            )
            .await
            .unwrap();
    }
    api.seed_cluster(None).await;
    let operator = api.key("operator").await;
    let base = format!("/v1/clusters/{cluster}/recommendations");
    let listed = api.get(&base, &api.admin).await;
    let revisions: Vec<u64> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [2, 1]);

    let old = api
        .post(&format!("{base}/1/approve"), &operator, json!({}))
        .await;
    assert_eq!(
        (old.status, error_code(&old)),
        (StatusCode::CONFLICT, "superseded")
    );
    let viewer = api.key("viewer").await;
    assert_eq!(
        api.post(&format!("{base}/2/approve"), &viewer, json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Without a snapshot there is nothing to roll the plan out on; the approval is released.
    let early = api
        .post(&format!("{base}/2/approve"), &operator, json!({}))
        .await;
    assert_eq!(
        (early.status, error_code(&early)),
        (StatusCode::CONFLICT, "no_snapshot"),
        "{}",
        early.body
    );
    assert_eq!(
        api.get(&format!("{base}/2"), &api.admin).await.body["status"],
        "proposed"
    );
    let agent = api.agent_key().await;
    let snapshot = fixture_snapshot();
    let uploaded = api
        .upload_snapshot(&agent, &serde_json::to_value(&snapshot).unwrap())
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.body);

    let approved = api
        .post(&format!("{base}/2/approve"), &operator, json!({}))
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "applying");
    let rollout = &approved.body["rollout"];
    assert_eq!(rollout["status"], "provisioning", "{rollout}");
    assert_eq!(rollout["planned"]["nodes"], 2);
    let groups = rollout["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{rollout}");
    assert!(
        groups[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("spotwise-spot-")
    );
    assert_eq!(groups[0]["desired"], 2);
    let kept = rollout["kept"].as_array().unwrap().len();
    let replaced = rollout["replaced"].as_array().unwrap().len();
    assert_eq!(kept + replaced, snapshot.nodes.len());
    let shown = api.get(&format!("{base}/2/rollout"), &api.admin).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["revision"], 2);
    assert_eq!(
        api.post(&format!("{base}/2/approve"), &operator, json!({}))
            .await
            .status,
        StatusCode::CONFLICT,
        "approved once"
    );

    // Cancel: asked once, audited; the scheduler stops the rollout at its next safe point.
    assert_eq!(
        api.post(&format!("{base}/2/rollout/cancel"), &viewer, json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let cancel = api
        .post(&format!("{base}/2/rollout/cancel"), &operator, json!({}))
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);
    assert!(cancel.body["cancel_requested_by"].is_string());
    assert_eq!(
        api.get(&format!("{base}/2/rollout"), &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("{base}/1/rollout"), &api.admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get(&format!("{base}/2"), &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
}
