//! `/v1/accounts`: external ids, linking, validation and unlinking.

use super::*;

#[tokio::test]
async fn accounts_are_linked_with_the_tenants_external_id() {
    let api = api().await;
    let role = "arn:aws:iam::111122223333:role/SpotwiseAccess";
    let early = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(
        (early.status, error_code(&early)),
        (StatusCode::CONFLICT, "no_external_id")
    );

    let issued = api
        .post("/v1/accounts/external-id", &api.admin, json!({}))
        .await;
    let external_id = issued.body["external_id"].as_str().unwrap().to_owned();
    assert!(external_id.starts_with("sw-"));
    assert_eq!(
        api.post("/v1/accounts/external-id", &api.admin, json!({}))
            .await
            .body["external_id"],
        external_id.as_str(),
        "stable"
    );
    let other = api
        .post("/v1/accounts/external-id", &api.other_admin, json!({}))
        .await;
    assert_ne!(
        other.body["external_id"],
        external_id.as_str(),
        "per tenant"
    );

    for (body, field) in [
        (
            json!({"role_arn": "arn:aws:iam::1111:role/x", "regions": ["us-east-1"]}),
            "role_arn",
        ),
        (json!({"role_arn": role, "regions": []}), "regions"),
        (
            json!({"role_arn": role, "regions": ["mars-1"]}),
            "regions[0]",
        ),
    ] {
        let reply = api.post("/v1/accounts", &api.admin, body).await;
        assert_eq!(
            (reply.status, &reply.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{}",
            reply.body
        );
    }
    let linked = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1", "eu-west-1"]}),
        )
        .await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.body);
    assert_eq!(
        (&linked.body["account_id"], &linked.body["external_id"]),
        (&json!("111122223333"), &json!(external_id))
    );
    let again = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let elsewhere = api
        .post(
            "/v1/accounts",
            &api.other_admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::CONFLICT, "{}", elsewhere.body);
    assert!(
        elsewhere.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another Spotwise tenant"),
        "one tenant per AWS account, so cluster partitions are never shared"
    );

    let validated = api
        .post("/v1/accounts/111122223333/validate", &api.admin, json!({}))
        .await;
    assert_eq!(
        validated.body["health"]["state"], "healthy",
        "{}",
        validated.body
    );
    assert_eq!(
        api.get("/v1/accounts", &api.admin).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        api.get("/v1/accounts", &api.other_admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.delete("/v1/accounts/111122223333", &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/v1/accounts/111122223333", &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let moved = api
        .post(
            "/v1/accounts",
            &api.other_admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(
        moved.status,
        StatusCode::CREATED,
        "free once unlinked: {}",
        moved.body
    );
    let audited: Vec<String> = api.get("/v1/audit", &api.admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for action in ["account.external_id", "account.validate", "account.unlink"] {
        assert!(audited.iter().any(|a| a == action), "{action}: {audited:?}");
    }
    assert!(
        api.get("/v1/accounts", &api.admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
