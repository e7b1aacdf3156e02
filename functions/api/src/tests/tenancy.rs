//! Tenant isolation: one tenant's key neither finds nor changes another tenant's data.

use super::*;

#[tokio::test]
async fn one_tenants_key_finds_nothing_of_another_tenant() {
    let api = api().await;
    let created = api
        .post(
            "/v1/webhooks",
            &api.admin,
            webhook("https://hooks.example.com/a"),
        )
        .await;
    let id = created.body["webhook"]["id"].as_str().unwrap().to_owned();
    let silence = api.post("/v1/silences", &api.admin, json!({"matchers": [{"label": "env", "op": "equal", "value": "dev"}],
        "expires_at": spotwise_core::rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1)), "comment": "noise"})).await;
    let window = api
        .post(
            "/v1/maintenance-windows",
            &api.admin,
            json!({"name": "patching", "rule": "FREQ=WEEKLY;BYDAY=SA",
        "starts": "2026-11-07T02:00:00Z", "duration_minutes": 120}),
        )
        .await;
    assert_eq!(
        (silence.status, window.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    let (silence_id, window_id) = (
        silence.body["id"].as_str().unwrap(),
        window.body["id"].as_str().unwrap(),
    );
    let own_key = api.get("/v1/keys", &api.admin).await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let b = &api.other_admin;
    for path in [
        format!("/v1/webhooks/{id}"),
        format!("/v1/webhooks/{id}/deliveries"),
    ] {
        assert_eq!(
            api.get(&path, b).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let put = api
        .send(
            Method::PUT,
            &format!("/v1/webhooks/{id}"),
            Some(b),
            Some(webhook("https://hooks.example.com/b")),
            &[],
        )
        .await;
    assert_eq!(put.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.post(&format!("/v1/webhooks/{id}/test"), b, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    for path in [
        format!("/v1/webhooks/{id}"),
        format!("/v1/silences/{silence_id}"),
        format!("/v1/maintenance-windows/{window_id}"),
        format!("/v1/keys/{own_key}"),
    ] {
        assert_eq!(
            api.delete(&path, b).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for list in [
        "/v1/webhooks",
        "/v1/silences",
        "/v1/maintenance-windows",
        "/v1/notifications",
        "/v1/audit",
    ] {
        let reply = api.get(list, b).await;
        assert_eq!(reply.status, StatusCode::OK, "{list}");
        let items = reply.body["items"].as_array().unwrap();
        assert!(
            items
                .iter()
                .all(|i| !i.to_string().contains(&id) && !i.to_string().contains("patching")),
            "{list}: {items:?}"
        );
    }
    assert_eq!(
        api.get(&format!("/v1/webhooks/{id}"), &api.admin)
            .await
            .status,
        StatusCode::OK,
        "still there for its tenant"
    );
}

#[tokio::test]
async fn another_tenants_key_can_change_nothing_of_a_tenant() {
    let api = api().await;
    api.seed_cluster(None).await;
    let cluster = prod_cluster();
    api.seed_action("a1", &cluster).await;
    let schedule = api
        .post(
            "/v1/schedules",
            &api.admin,
            json!({"cluster_id": cluster.as_str(), "name": "nightly", "kind": "optimize",
                   "cron": "0 2 * * *", "time_zone": "UTC"}),
        )
        .await;
    assert_eq!(schedule.status, StatusCode::CREATED, "{}", schedule.body);
    let schedule = schedule.body["schedule"]["id"].as_str().unwrap().to_owned();
    let template = api
        .post(
            &format!("/v1/clusters/{cluster}/node-templates"),
            &api.admin,
            json!({"name": "general", "instance_families": ["m5"]}),
        )
        .await;
    assert_eq!(template.status, StatusCode::CREATED, "{}", template.body);
    let template = template.body["id"].as_str().unwrap().to_owned();
    let hibernation = api
        .send(
            Method::PUT,
            &format!("/v1/clusters/{cluster}/hibernation"),
            Some(&api.admin),
            Some(office_hours()),
            &[],
        )
        .await;
    assert_eq!(hibernation.status, StatusCode::OK, "{}", hibernation.body);

    let c = format!("/v1/clusters/{cluster}");
    let mut policy = api.get(&format!("{c}/policy"), &api.admin).await.body;
    policy["mode"] = json!("auto");
    let until = spotwise_core::rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(2));
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::PUT, format!("{c}/policy"), Some(policy)),
        (Method::POST, format!("{c}/agent"), Some(json!({}))),
        (
            Method::POST,
            format!("{c}/recommendations/1/approve"),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("{c}/hibernation"),
            Some(office_hours()),
        ),
        (Method::DELETE, format!("{c}/hibernation"), None),
        (
            Method::POST,
            format!("{c}/hibernation/wake"),
            Some(json!({"until": until})),
        ),
        (
            Method::DELETE,
            format!("{c}/node-templates/{template}"),
            None,
        ),
        (
            Method::POST,
            "/v1/actions/a1/cancel".into(),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/schedules/{schedule}/pause"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/schedules/{schedule}/trigger"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/v1/schedules/{schedule}"), None),
        (
            Method::POST,
            "/v1/accounts/111122223333/validate".into(),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in attempts {
        let reply = api
            .send(method.clone(), &path, Some(&api.other_admin), body, &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.body
        );
    }
    // Everything is as it was.
    assert_eq!(
        api.get("/v1/actions/a1", &api.admin).await.body["status"],
        "queued"
    );
    assert_eq!(
        api.get(&format!("/v1/schedules/{schedule}"), &api.admin)
            .await
            .body["schedule"]["status"],
        "active"
    );
    assert_eq!(
        api.get(&format!("{c}/hibernation"), &api.admin)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("{c}/policy"), &api.admin).await.body["mode"],
        "recommend"
    );
}
