//! The public status page: opt-in by an admin, found by a random id, uptime from the agent's
//! silences, and nothing else of the tenant.

use super::*;

async fn beat(api: &Api, agent: &str) {
    let reply = api
        .post(
            "/v1/agent/heartbeat",
            agent,
            json!({"agent_version": "0.1.0", "dry_run": false}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
}

#[tokio::test]
async fn the_public_status_page_shows_uptime_from_the_agents_silences_and_nothing_else() {
    let mut api = api().await;
    api.seed_cluster(None).await;
    let agent = api.agent_key().await;
    let now = OffsetDateTime::now_utc();
    // The agent first reports three hours ago, then falls silent for two hours.
    api.state.clock = Clock::set_by_caller(now - time::Duration::hours(3));
    beat(&api, &agent).await;
    api.state.clock.set(now - time::Duration::hours(1));
    beat(&api, &agent).await;

    let viewer = api.key("viewer").await;
    let refused = api
        .send(
            Method::PUT,
            "/v1/tenant/status-page",
            Some(&viewer),
            Some(json!({"enabled": true})),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let off = api.get("/v1/tenant/status-page", &api.admin).await;
    assert_eq!(off.body["enabled"], false);
    let published = api
        .send(
            Method::PUT,
            "/v1/tenant/status-page",
            Some(&api.admin),
            Some(json!({"enabled": true})),
            &[],
        )
        .await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.body);
    let path = published.body["page_path"].as_str().unwrap().to_owned();
    let id = path.trim_start_matches("/status/").to_owned();
    assert_eq!(id.len(), 24);

    let public = api
        .send(Method::GET, &format!("/v1/status/{id}"), None, None, &[])
        .await;
    assert_eq!(public.status, StatusCode::OK, "{}", public.body);
    let cluster = &public.body["clusters"][0];
    assert_eq!(cluster["name"], "prod");
    assert_eq!(cluster["agent"], "online");
    let uptime = cluster["uptime"].as_f64().unwrap();
    assert!(
        (uptime - 1.0 / 3.0).abs() < 1e-3,
        "two silent hours of three: {uptime}"
    );
    let days = cluster["days"].as_array().unwrap();
    assert_eq!(days.len(), 90);
    assert!(
        days[..88].iter().all(Value::is_null),
        "no uptime before the first report"
    );
    let text = public.body.to_string();
    for secret in ["111122223333", "t1", "arn:", "us-east-1"] {
        assert!(!text.contains(secret), "{secret} is not public: {text}");
    }

    let page = api.send(Method::GET, &path, None, None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.as_str().unwrap().contains("prod"));
    let badge = api
        .send(Method::GET, &format!("{path}/badge.svg"), None, None, &[])
        .await;
    assert_eq!(badge.headers[header::CONTENT_TYPE], "image/svg+xml");
    assert!(badge.body.as_str().unwrap().contains("spot savings"));

    // Another tenant's page is its own; a made-up id finds nothing.
    assert_eq!(
        api.get("/v1/tenant/status-page", &api.other_admin)
            .await
            .body["enabled"],
        false
    );
    for made_up in ["0123456789abcdef01234567", "not-an-id", "../tenant"] {
        let missing = api
            .send(
                Method::GET,
                &format!("/v1/status/{made_up}"),
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{made_up}");
    }

    // Taken down, the address stops working; published again, the page has a new one.
    let down = api
        .send(
            Method::PUT,
            "/v1/tenant/status-page",
            Some(&api.admin),
            Some(json!({"enabled": false})),
            &[],
        )
        .await;
    assert_eq!(down.body["enabled"], false);
    let gone = api
        .send(Method::GET, &format!("/v1/status/{id}"), None, None, &[])
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = api
        .send(
            Method::PUT,
            "/v1/tenant/status-page",
            Some(&api.admin),
            Some(json!({"enabled": true})),
            &[],
        )
        .await;
    assert_ne!(again.body["page_path"], path.as_str());
    let audit = api
        .get("/v1/audit?action=status_page.enable", &api.admin)
        .await;
    assert_eq!(audit.body["items"].as_array().unwrap().len(), 2);
}
