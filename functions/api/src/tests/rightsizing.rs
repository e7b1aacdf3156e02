//! `/v1/clusters/{id}/rightsizing`: recommendations and changes listed, applying one, and the
//! policy's right-sizing bounds.

use spotwise_core::rightsizing::{ContainerResources, ControllerRef, RightSizingMode};
use spotwise_optimizer::plan::RightSizing;
use spotwise_optimizer::recommendation::Recommendation;
use spotwise_optimizer::rightsizing::{ContainerChange, WorkloadRightSizing, WorkloadStatus};

use super::*;

fn workload(key: &str, status: WorkloadStatus, reason: &str) -> WorkloadRightSizing {
    let resources = |cpu_request_m, mem_request_mib| ContainerResources {
        name: "main".into(),
        cpu_request_m,
        mem_request_mib,
        cpu_limit_m: None,
        mem_limit_mib: None,
    };
    WorkloadRightSizing {
        workload: ControllerRef::parse(key).unwrap(),
        key: key.into(),
        replicas: 5,
        mode: RightSizingMode::Recommend,
        status,
        reason: reason.into(),
        containers: vec![ContainerChange {
            before: resources(250, 512),
            after: resources(60, 200),
            usage: None,
            held: Vec::new(),
        }],
        monthly_saving: 12.5,
    }
}

async fn seed_recommendation(api: &Api, workloads: Vec<WorkloadRightSizing>) {
    let mut rec: Recommendation =
        serde_json::from_value(super::recommendations::recommendation(1)).unwrap();
    rec.right_sizing = Some(RightSizing {
        recommendations: Vec::new(),
        projected_cost_hr: 0.45,
        projected_monthly_saving: 36.5,
        workloads,
    });
    let tenant = TenantId::new("t1").unwrap();
    api.state
        .store
        .put(
            &Item::new(keys::recommendation(&tenant, &prod_cluster(), 1), rec),
            PutCondition::Always,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_ready_recommendation_is_applied_once_and_listed_with_its_change() {
    let api = api().await;
    api.seed_cluster(None).await;
    seed_recommendation(
        &api,
        vec![
            workload(
                "shop/Deployment/web",
                WorkloadStatus::Ready,
                "main: cpu 250m -> 60m",
            ),
            workload(
                "kube-system/Deployment/coredns",
                WorkloadStatus::InsufficientHistory,
                "needs 24 h of usage including a full weekday; has 3 h",
            ),
        ],
    )
    .await;
    let path = format!("/v1/clusters/{}/rightsizing", prod_cluster());
    let viewer = api.key("viewer").await;
    let operator = api.key("operator").await;

    let listed = api.get(&path, &viewer).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["revision"], 1);
    assert_eq!(listed.body["projected_monthly_saving"], 36.5);
    assert_eq!(listed.body["ready_monthly_saving"], 12.5);
    assert_eq!(
        listed.body["workloads"][1]["status"],
        "insufficient_history"
    );
    assert_eq!(listed.body["changes"], json!([]));

    let apply = format!("{path}/apply");
    let web = json!({"workload": "shop/Deployment/web"});
    assert_eq!(
        api.post(&apply, &viewer, web.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    for (body, field) in [
        (json!({"workload": "shop/ReplicaSet/web-7f9c"}), "workload"),
        (json!({"workload": "x".repeat(331)}), "workload"),
        (
            json!({"workload": "shop/Deployment/web", "now": true}),
            "now",
        ),
    ] {
        let refused = api.post(&apply, &operator, body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{}",
            refused.body
        );
    }
    let unknown = api
        .post(
            &apply,
            &operator,
            json!({"workload": "shop/Deployment/cart"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let thin = api
        .post(
            &apply,
            &operator,
            json!({"workload": "kube-system/Deployment/coredns"}),
        )
        .await;
    assert_eq!(
        (thin.status, error_code(&thin)),
        (StatusCode::CONFLICT, "not_ready")
    );
    assert!(
        thin.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has 3 h")
    );
    // The watch needs the workload's pods: no snapshot, no change.
    let blind = api.post(&apply, &operator, web.clone()).await;
    assert_eq!(
        (blind.status, error_code(&blind)),
        (StatusCode::CONFLICT, "no_snapshot")
    );

    let agent = api.agent_key().await;
    let uploaded = api
        .upload_snapshot(&agent, &serde_json::to_value(fixture_snapshot()).unwrap())
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.body);
    let applied = api.post(&apply, &operator, web.clone()).await;
    assert_eq!(applied.status, StatusCode::ACCEPTED, "{}", applied.body);
    assert_eq!(applied.body["status"], "pending");
    assert_eq!(applied.body["containers"][0]["after"]["cpu_request_m"], 60);
    assert_eq!(applied.body["watch_minutes"], 60);
    let again = api.post(&apply, &operator, web).await;
    assert_eq!(
        (again.status, error_code(&again)),
        (StatusCode::CONFLICT, "change_in_progress")
    );

    let listed = api.get(&path, &viewer).await;
    assert_eq!(listed.body["changes"][0]["id"], applied.body["id"]);
    let audit = api
        .get("/v1/audit?action=rightsizing.request", &api.admin)
        .await;
    let event = &audit.body["items"][0];
    assert_eq!(
        event["target"],
        format!("cluster/{}/workload/shop/Deployment/web", prod_cluster())
    );
    assert_eq!(event["before"][0]["cpu_request_m"], 250);
    assert_eq!(event["after"][0]["cpu_request_m"], 60);
    // Another tenant sees none of it.
    assert_eq!(
        api.get(&path, &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_policy_bounds_right_sizing_settings_by_field() {
    let api = api().await;
    api.seed_cluster(None).await;
    let path = format!("/v1/clusters/{}/policy", prod_cluster());
    let policy = api.get(&path, &api.admin).await.body;
    assert_eq!(policy["right_sizing"]["mode"], "recommend");
    assert_eq!(policy["right_sizing"]["limits"], "keep_ratio");
    for (patch, field) in [
        (json!({"watch_minutes": 5}), "right_sizing.watch_minutes"),
        (
            json!({"mem_headroom_pct": 500}),
            "right_sizing.mem_headroom_pct",
        ),
        (
            json!({"workloads": {"shop/web": "auto"}}),
            "right_sizing.workloads",
        ),
        (
            json!({"excluded_namespaces": ["Shop"]}),
            "right_sizing.excluded_namespaces[0]",
        ),
        (json!({"mode": "sometimes"}), "right_sizing.mode"),
    ] {
        let mut body = policy.clone();
        for (k, v) in patch.as_object().unwrap() {
            body["right_sizing"][k] = v.clone();
        }
        let reply = api
            .send(Method::PUT, &path, Some(&api.admin), Some(body), &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{field}: {}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{field}: {}",
            reply.body
        );
    }
    let mut body = policy;
    body["right_sizing"]["mode"] = json!("auto");
    body["right_sizing"]["workloads"] = json!({"payments/StatefulSet/ledger": "off"});
    let reply = api
        .send(Method::PUT, &path, Some(&api.admin), Some(body), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["right_sizing"]["workloads"]["payments/StatefulSet/ledger"],
        "off"
    );
}
