//! `/v1/clusters/{id}/hibernation`: schedule, preview, wake-up and sleeps.

use super::*;

#[tokio::test]
async fn hibernation_schedules_are_validated_locked_previewed_and_woken() {
    let api = api().await;
    api.seed_cluster(None).await;
    let path = format!("/v1/clusters/{}/hibernation", prod_cluster());
    let operator = api.key("operator").await;
    let viewer = api.key("viewer").await;

    let fresh = api.get(&path, &viewer).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert_eq!(fresh.body["schedule"]["enabled"], false);
    assert_eq!(fresh.headers[header::ETAG], "\"0\"");

    let mut bad_day = office_hours();
    bad_day["awake"][3] = json!("1111");
    let mut bad_zone = office_hours();
    bad_zone["time_zone"] = json!("Europe/Atlantis");
    let mut bad_ns = office_hours();
    bad_ns["exclude_namespaces"] = json!(["Payments!"]);
    for (body, field) in [
        (bad_day, "awake[3]"),
        (bad_zone, "time_zone"),
        (bad_ns, "exclude_namespaces[0]"),
    ] {
        let reply = api
            .send(Method::PUT, &path, Some(&operator), Some(body), &[])
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert_eq!(reply.body["error"]["field"], field);
    }
    let refused = api
        .send(Method::PUT, &path, Some(&viewer), Some(office_hours()), &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let saved = api
        .send(
            Method::PUT,
            &path,
            Some(&operator),
            Some(office_hours()),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert_eq!(saved.headers[header::ETAG], "\"1\"");
    let stale = api
        .send(
            Method::PUT,
            &path,
            Some(&operator),
            Some(office_hours()),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

    let preview = api.get(&format!("{path}/preview?days=7"), &viewer).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!((preview.body["asleep_hours"].as_f64().unwrap() - 108.0).abs() < 1.01);
    assert_eq!(preview.body["transitions"].as_array().unwrap().len(), 10);
    assert_eq!(
        preview.body["estimated_savings_usd"],
        Value::Null,
        "no cost sampled yet"
    );
    let too_far = api.get(&format!("{path}/preview?days=30"), &viewer).await;
    assert_eq!(too_far.body["error"]["field"], "days");

    let until = OffsetDateTime::now_utc() + time::Duration::hours(3);
    let until_text = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let woken = api
        .post(
            &format!("{path}/wake"),
            &operator,
            json!({"until": until_text}),
        )
        .await;
    assert_eq!(woken.status, StatusCode::OK, "{}", woken.body);
    assert!(woken.body["schedule"]["wake_until"].is_string());
    let preview = api.get(&format!("{path}/preview?days=1"), &viewer).await;
    let first = &preview.body["transitions"][0];
    assert!(
        first.is_null() || first["at"].as_str().unwrap() >= until_text.as_str(),
        "nothing sleeps before the wake-up ends: {first}"
    );
    let past = api
        .post(
            &format!("{path}/wake"),
            &operator,
            json!({"until": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(past.body["error"]["field"], "until");

    // Another tenant sees nothing; asleep clusters cannot lose their schedule.
    assert_eq!(
        api.get(&path, &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
    let tenant = TenantId::new("t1").unwrap();
    api.state
        .store
        .put(
            &Item::new(
                keys::hibernation_state(&tenant, &prod_cluster()),
                spotwise_schedule::model::HibernationState {
                    asleep_since: OffsetDateTime::now_utc(),
                    awake_cost_hr: 2.0,
                    node_groups: vec![],
                    workloads: vec![],
                    cordoned_nodes: vec![],
                    complete: true,
                    problems: vec![],
                },
            ),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let asleep = api.get(&path, &viewer).await;
    assert_eq!(asleep.body["asleep"]["awake_cost_hr"], 2.0);
    assert_eq!(
        api.delete(&path, &operator).await.status,
        StatusCode::CONFLICT
    );
    api.state
        .store
        .delete(&keys::hibernation_state(&tenant, &prod_cluster()))
        .await
        .unwrap();
    assert_eq!(
        api.delete(&path, &operator).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get(&format!("{path}/sleeps"), &viewer).await.body["items"],
        json!([])
    );

    let actions: Vec<String> = api
        .audit_actions()
        .await
        .into_iter()
        .filter(|a| a.starts_with("hibernation."))
        .collect();
    assert_eq!(
        actions,
        [
            "hibernation.delete",
            "hibernation.wake",
            "hibernation.update"
        ]
    );
}
