//! `/v1/clusters`: detail, policy and pod history.

use super::*;

#[tokio::test]
async fn clusters_and_policies_are_read_and_replaced_per_tenant() {
    let api = api().await;
    api.seed_cluster(None).await;
    let id = prod_cluster().to_string();
    let listed = api.get("/v1/clusters", &api.admin).await;
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
    assert!(
        api.get("/v1/clusters", &api.other_admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.get(&format!("/v1/clusters/{id}"), &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let detail = api.get(&format!("/v1/clusters/{id}"), &api.admin).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert_eq!(
        detail.body["snapshot_problem"],
        "the agent has uploaded no snapshot"
    );

    let path = format!("/v1/clusters/{id}/policy");
    let policy = api.get(&path, &api.admin).await;
    assert_eq!(
        (
            policy.headers[header::ETAG].to_str().unwrap(),
            &policy.body["mode"]
        ),
        ("\"0\"", &json!("recommend"))
    );
    assert_eq!(
        (
            &policy.body["exclude_burstable"],
            &policy.body["exclude_previous_generation"]
        ),
        (&json!(true), &json!(false)),
        "burstable types are left out by default"
    );
    let mut changed = policy.body.clone();
    changed["mode"] = json!("auto");
    changed["min_spot_pools"] = json!(4);
    changed["exclude_previous_generation"] = json!(true);
    let put = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed.clone()),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(
        (put.status, put.headers[header::ETAG].to_str().unwrap()),
        (StatusCode::OK, "\"1\""),
        "{}",
        put.body
    );
    let stale = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed.clone()),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let stored = api.get(&path, &api.admin).await.body;
    assert_eq!(
        (&stored["mode"], &stored["exclude_previous_generation"]),
        (&json!("auto"), &json!(true))
    );
    changed["min_spot_pools"] = json!(0);
    let invalid = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed.clone()),
            &[],
        )
        .await;
    assert_eq!(
        (invalid.status, &invalid.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("min_spot_pools"))
    );
    let other = api
        .send(
            Method::PUT,
            &path,
            Some(&api.other_admin),
            Some(policy.body),
            &[],
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn each_snapshot_adds_what_changed_to_the_pod_history() {
    let api = api().await;
    api.seed_cluster(None).await;
    let agent = api.agent_key().await;
    let mut snapshot = fixture_snapshot();
    let upload = |body: Value| {
        let api = &api;
        let agent = agent.clone();
        async move {
            let reply = api.upload_snapshot(&agent, &body).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert!(reply.body["snapshot_id"].is_string(), "{}", reply.body);
        }
    };
    upload(serde_json::to_value(&snapshot).unwrap()).await;
    let moved = &mut snapshot.pods[0];
    let pod = format!("{}/{}", moved.workload.namespace, moved.workload.name);
    moved.spec.node = Some("ip-10-0-9-99.ec2.internal".into());
    let gone = snapshot.pods.remove(1);
    upload(serde_json::to_value(&snapshot).unwrap()).await;

    let path = format!("/v1/clusters/{}/pod-history", prod_cluster());
    let all = api.get(&path, &api.admin).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let changes: Vec<(String, String)> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pod"].as_str().unwrap().to_owned(),
                e["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.contains(&(pod.clone(), "moved".to_owned())));
    assert!(changes.contains(&(
        format!("{}/{}", gone.workload.namespace, gone.workload.name),
        "gone".to_owned()
    )));

    let one = api.get(&format!("{path}?pod={pod}"), &api.admin).await;
    let items = one.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["to"], "ip-10-0-9-99.ec2.internal");
    let bad = api.get(&format!("{path}?pod=nope"), &api.admin).await;
    assert_eq!(bad.body["error"]["field"], "pod");
    assert_eq!(
        api.get(&path, &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get(&path, &agent).await.status, StatusCode::FORBIDDEN);
}
