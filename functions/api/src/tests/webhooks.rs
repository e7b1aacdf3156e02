//! `/v1/webhooks`: optimistic locking, secrets, audit and test deliveries.

use super::*;

#[tokio::test]
async fn webhooks_are_replaced_under_optimistic_locking_and_audited_without_secrets() {
    let api = api().await;
    let created = api
        .post(
            "/v1/webhooks",
            &api.admin,
            json!({"name": "ops", "kind": "generic", "url": "https://hooks.example.com/a"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.headers[header::ETAG], "\"1\"");
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "generated when not given");
    let id = created.body["webhook"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhooks/{id}");

    let read = api.get(&path, &api.admin).await;
    assert_eq!(read.headers[header::ETAG], "\"1\"");
    assert!(!read.body.to_string().contains(&secret));
    assert_eq!(
        read.body["secret_hint"],
        format!("…{}", &secret[secret.len() - 4..])
    );

    let changed = json!({"name": "ops (renamed)", "kind": "generic", "url": "https://hooks.example.com/b", "min_severity": "warning"});
    let replaced = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed.clone()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(
        (
            replaced.headers[header::ETAG].to_str().unwrap(),
            &replaced.body["min_severity"]
        ),
        ("\"2\"", &json!("warning"))
    );
    assert_eq!(
        replaced.body["secret_hint"], read.body["secret_hint"],
        "the secret is kept"
    );
    let stale = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        (stale.status, error_code(&stale)),
        (StatusCode::PRECONDITION_FAILED, "precondition_failed")
    );

    assert_eq!(
        api.delete(&path, &api.admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get(&path, &api.admin).await.status,
        StatusCode::NOT_FOUND
    );

    let audit = api.get("/v1/audit", &api.admin).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "webhook.delete",
            "webhook.update",
            "webhook.create",
            "key.bootstrap"
        ],
        "newest first"
    );
    let update = &audit.body["items"][1];
    assert_eq!(
        (&update["before"]["name"], &update["after"]["name"]),
        (&json!("ops"), &json!("ops (renamed)"))
    );
    assert!(update["actor"].as_str().unwrap().starts_with("key:"));
    assert!(
        !audit.body.to_string().contains(&secret),
        "no secret in the audit log"
    );
}

#[tokio::test]
async fn test_deliveries_report_what_the_receiver_said() {
    let api = api_with(&[("SPOTWISE_DEV_MODE", "true")]).await;
    let receiver = Receiver::start().await;
    let good = api
        .post("/v1/webhooks", &api.admin, webhook(&receiver.url("hook")))
        .await;
    let gone = api
        .post(
            "/v1/webhooks",
            &api.admin,
            json!({"name": "old", "kind": "slack", "url": receiver.url("gone")}),
        )
        .await;
    let (good, gone) = (
        good.body["webhook"]["id"].as_str().unwrap(),
        gone.body["webhook"]["id"].as_str().unwrap(),
    );

    let tested = api
        .post(&format!("/v1/webhooks/{good}/test"), &api.admin, json!({}))
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.body);
    assert_eq!(
        (
            &tested.body["outcome"],
            &tested.body["status"],
            &tested.body["response"]
        ),
        (&json!("delivered"), &json!(200), &json!("ok"))
    );
    let received = &receiver.requests()[0];
    let signature = received.headers[spotwise_notify::sign::SIGNATURE_HEADER]
        .to_str()
        .unwrap();
    assert!(
        spotwise_notify::sign::verify(
            b"whsec_0123456789abcdef",
            signature,
            &received.body,
            OffsetDateTime::now_utc().unix_timestamp(),
            300
        )
        .is_ok()
    );
    let sent: Notification = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(sent.event_type, "test");

    let refused = api
        .post(&format!("/v1/webhooks/{gone}/test"), &api.admin, json!({}))
        .await;
    assert_eq!(
        (&refused.body["outcome"], &refused.body["status"]),
        (&json!("rejected"), &json!(410))
    );

    let log = api
        .get(&format!("/v1/webhooks/{good}/deliveries"), &api.admin)
        .await;
    assert_eq!(log.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(log.body["items"][0]["event_type"], "test");
}

#[tokio::test]
async fn the_table_alone_reveals_no_webhook_url_or_secret() {
    let api = api().await;
    let url = "https://hooks.slack.com/services/T0000/B0000/s3cr3tPathToken";
    let created = api
        .post(
            "/v1/webhooks",
            &api.admin,
            json!({"name": "ops", "kind": "slack", "url": url, "secret": "whsec_s3cr3t_signing_key"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["webhook"]["id"].as_str().unwrap();

    // The raw item, as anyone who can read the table sees it.
    let raw = api
        .state
        .store
        .get::<Value>(&keys::webhook(&TenantId::new("t1").unwrap(), id))
        .await
        .unwrap()
        .unwrap()
        .body
        .to_string();
    for plain in [
        "s3cr3tPathToken",
        "hooks.slack.com/services",
        "whsec_s3cr3t_signing_key",
    ] {
        assert!(!raw.contains(plain), "{plain} in {raw}");
    }
    // Operators still see the URL whole; viewers see it redacted.
    let shown = api.get(&format!("/v1/webhooks/{id}"), &api.admin).await;
    assert_eq!(shown.body["url"], url);
    let viewer = api.key("viewer").await;
    let shown = api.get(&format!("/v1/webhooks/{id}"), &viewer).await;
    assert_eq!(shown.body["url"], "https://hooks.slack.com/…oken");
}
