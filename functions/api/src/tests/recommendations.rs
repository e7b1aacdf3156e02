//! `/v1/clusters/{id}/recommendations` and approving a plan.

use super::*;

fn recommendation(revision: u64) -> Value {
    json!({
        "id": format!("rec{revision}"), "revision": revision, "tenant_id": "t1", "cluster_id": prod_cluster().to_string(),
        "trigger": "schedule", "mode": "recommend", "status": "proposed", "snapshot_id": "s1",
        "created_at": "2026-11-24T10:00:00Z", "cost_hr": 0.5,
        "summary": {"pods": 10, "placed_pods": 10, "nodes": 2, "spot_nodes": 1, "monthly_cost": 365.0,
            "on_demand_equivalent_monthly": 500.0, "current_monthly_cost": 600.0, "monthly_savings": 235.0,
            "spot_cost_share": 0.5, "spot_pod_share": 0.5, "spot_pools": 1, "risk_score": 10.0,
            "cpu_utilisation": 0.7, "mem_utilisation": 0.6, "explanation": []},
        "node_mix": [], "unschedulable": [],
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
async fn approving_the_newest_plan_sends_its_first_wave() {
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

    let approved = api
        .post(&format!("{base}/2/approve"), &operator, json!({}))
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "applying");
    let ids = approved.body["action_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "only the first wave");
    let action = api
        .get(
            &format!("/v1/actions/{}", ids[0].as_str().unwrap()),
            &api.admin,
        )
        .await;
    assert_eq!(
        action.body["action"]["spec"]["node"],
        "ip-10-0-2-13.ec2.internal"
    );
    assert_eq!(
        action.body["status"], "undeliverable",
        "the cluster has no agent installed yet"
    );
    assert_eq!(
        api.post(&format!("{base}/2/approve"), &operator, json!({}))
            .await
            .status,
        StatusCode::CONFLICT,
        "approved once"
    );
    assert_eq!(
        api.get(&format!("{base}/2"), &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
}
