//! `/v1/keys`: authentication, revocation, roles, agent keys and per-key rate limits.

use super::*;

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let api = api().await;
    let none = api.send(Method::GET, "/v1/tenant", None, None, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        api.get("/v1/tenant", "garbage").await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut forged = api.admin.clone();
    forged.pop();
    forged.push('x');
    assert_eq!(
        api.get("/v1/tenant", &forged).await.status,
        StatusCode::UNAUTHORIZED
    );

    let ok = api.get("/v1/tenant", &api.admin).await;
    assert_eq!(
        (ok.status, &ok.body["name"]),
        (StatusCode::OK, &json!("Acme"))
    );
    let by_header = api
        .send(
            Method::GET,
            "/v1/tenant",
            None,
            None,
            &[("x-api-key", &api.admin)],
        )
        .await;
    assert_eq!(by_header.status, StatusCode::OK);

    let viewer = api.key("viewer").await;
    let id = api.get("/v1/keys", &api.admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.delete(&format!("/v1/keys/{id}"), &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let revoked = api.get("/v1/tenant", &viewer).await;
    assert_eq!(
        (
            revoked.status,
            revoked.body["error"]["message"].as_str().unwrap()
        ),
        (StatusCode::UNAUTHORIZED, "the API key was revoked")
    );
    let listed = api.get("/v1/keys", &api.admin).await;
    assert!(
        !listed.body.to_string().contains("secret_sha256"),
        "hashes are never listed"
    );
}

#[tokio::test]
async fn roles_gate_every_mutation() {
    let api = api().await;
    let (viewer, operator) = (api.key("viewer").await, api.key("operator").await);
    let hook = webhook("https://hooks.example.com/spotwise");

    let denied = api.post("/v1/webhooks", &viewer, hook.clone()).await;
    assert_eq!(
        (denied.status, error_code(&denied)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert_eq!(
        api.post("/v1/webhooks", &operator, hook).await.status,
        StatusCode::CREATED
    );
    let seen = api.get("/v1/webhooks", &viewer).await;
    assert_eq!(seen.status, StatusCode::OK);
    // Chat webhook URLs are credentials: viewers see scheme, host and the last characters.
    assert_eq!(
        seen.body["items"][0]["url"],
        "https://hooks.example.com/…wise"
    );
    assert_eq!(
        api.get("/v1/webhooks", &operator).await.body["items"][0]["url"],
        "https://hooks.example.com/spotwise"
    );
    assert_eq!(
        api.post("/v1/keys", &operator, json!({"name": "x", "role": "admin"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get("/v1/keys", &operator).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get("/v1/audit", &operator).await.status,
        StatusCode::FORBIDDEN
    );
    let silence = json!({"matchers": [{"label": "env", "op": "equal", "value": "dev"}],
        "expires_at": spotwise_core::rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1)), "comment": "noise"});
    assert_eq!(
        api.post("/v1/silences", &viewer, silence.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.post("/v1/silences", &operator, silence).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn agent_keys_reach_no_tenant_data() {
    let api = api().await;
    let tenant = TenantId::new("t1").unwrap();
    let cluster = ClusterId::new("111122223333.us-east-1.prod").unwrap();
    api.state
        .store
        .put(
            &Item::new(
                keys::cluster(&tenant, &cluster),
                records::cluster(&tenant, &cluster, None),
            ),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let created = api
        .post(
            "/v1/keys",
            &api.admin,
            json!({"name": "prod agent", "role": "agent", "cluster_id": cluster.to_string()}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["key"]["cluster_id"], cluster.to_string());
    let agent = created.body["secret"].as_str().unwrap();
    for path in [
        "/v1/tenant",
        "/v1/webhooks",
        "/v1/notifications",
        "/v1/keys",
        "/v1/audit",
    ] {
        let reply = api.get(path, agent).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
    }
    let unknown = api
        .post(
            "/v1/keys",
            &api.admin,
            json!({"name": "x", "role": "agent", "cluster_id": "111122223333.us-east-1.nope"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let other_tenant = api
        .post(
            "/v1/keys",
            &api.other_admin,
            json!({"name": "x", "role": "agent", "cluster_id": cluster.to_string()}),
        )
        .await;
    assert_eq!(
        other_tenant.status,
        StatusCode::NOT_FOUND,
        "a cluster of another tenant"
    );
}

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after() {
    let api = api_with(&[("API_RATE_PER_MINUTE", "6"), ("API_RATE_BURST", "2")]).await;
    assert_eq!(
        api.get("/v1/tenant", &api.admin).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/v1/tenant", &api.admin).await.status,
        StatusCode::OK
    );
    let limited = api.get("/v1/tenant", &api.admin).await;
    assert_eq!(
        (limited.status, error_code(&limited)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(limited.headers[header::RETRY_AFTER], "10");
    assert_eq!(
        api.get("/v1/tenant", &api.other_admin).await.status,
        StatusCode::OK,
        "another key has its own bucket"
    );
}

#[tokio::test]
async fn a_key_revoked_elsewhere_stops_working_within_the_cache_time() {
    let api = api_with(&[("API_KEY_CACHE_SECONDS", "1")]).await;
    let viewer = api.key("viewer").await;
    assert_eq!(api.get("/v1/tenant", &viewer).await.status, StatusCode::OK);
    // Revoked by another instance of the function: straight in the table.
    let prefix = viewer.split('_').nth(1).unwrap();
    let mut item = api
        .state
        .store
        .get::<spotwise_core::domain::ApiKey>(&keys::api_key(prefix))
        .await
        .unwrap()
        .unwrap();
    item.body.revoked_at = Some(OffsetDateTime::now_utc());
    api.state.store.update_versioned(&item).await.unwrap();
    assert_eq!(
        api.get("/v1/tenant", &viewer).await.status,
        StatusCode::OK,
        "this instance still holds the key's record"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        api.get("/v1/tenant", &viewer).await.status,
        StatusCode::UNAUTHORIZED,
        "and reads it again once the cache time is over"
    );

    // Revoked through this instance: at once.
    let other = api.key("viewer").await;
    assert_eq!(api.get("/v1/tenant", &other).await.status, StatusCode::OK);
    let id = other.split('_').nth(1).unwrap();
    assert_eq!(
        api.delete(&format!("/v1/keys/{id}"), &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get("/v1/tenant", &other).await.status,
        StatusCode::UNAUTHORIZED
    );
}
