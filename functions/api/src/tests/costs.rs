//! `/v1/clusters/{id}/costs` and savings reports.

use super::*;

fn cost_period(period: &str, dimension: &str, lines: Value) -> spotwise_cost::report::CostPeriod {
    serde_json::from_value(json!({
        "cluster_id": prod_cluster().to_string(), "period": period, "dimension": dimension,
        "table": {"lines": lines}
    }))
    .unwrap()
}

fn line(cost: &str) -> Value {
    json!({"cost": cost, "cpu": cost, "memory": "0", "gpu": "0", "on_demand": "9", "idle": "0"})
}

#[tokio::test]
async fn costs_are_read_by_dimension_and_range_and_exported() {
    let api = api().await;
    api.seed_cluster(None).await;
    let tenant = TenantId::new("t1").unwrap();
    let cluster = prod_cluster();
    for (day, shop) in [
        ("2026-11-01", "1.25"),
        ("2026-11-02", "2.5"),
        ("2026-11-03", "0.125"),
    ] {
        let period = cost_period(
            day,
            "namespace",
            json!({"shop": line(shop), "kube-system": line("0.5")}),
        );
        let key = keys::cost(
            &tenant,
            &cluster,
            keys::CostGranularity::Day,
            "namespace",
            day,
        );
        api.state
            .store
            .put(&Item::new(key, period), PutCondition::Always)
            .await
            .unwrap();
    }
    let base = format!("/v1/clusters/{cluster}/costs");
    let ranged = api
        .get(
            &format!("{base}?dimension=namespace&from=2026-11-02&to=2026-11-03"),
            &api.admin,
        )
        .await;
    assert_eq!(ranged.status, StatusCode::OK, "{}", ranged.body);
    let periods: Vec<&str> = ranged.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["period"].as_str().unwrap())
        .collect();
    assert_eq!(periods, ["2026-11-02", "2026-11-03"]);
    assert_eq!(
        ranged.body["items"][0]["table"]["lines"]["shop"]["cost"],
        "2.5"
    );
    assert!(
        api.get(&format!("{base}?granularity=month"), &api.admin)
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let bad = api.get(&format!("{base}?from=2026-11"), &api.admin).await;
    assert_eq!(
        (bad.status, &bad.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("from"))
    );
    let unknown = api.get(&format!("{base}?dimension=team"), &api.admin).await;
    assert_eq!(
        (unknown.status, &unknown.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("dimension"))
    );

    let csv = api
        .get(&format!("{base}/export?dimension=namespace"), &api.admin)
        .await;
    let text = csv.body.as_str().unwrap();
    assert_eq!(text.lines().count(), 1 + 6);
    assert!(
        text.contains("2026-11-02,namespace,shop,2.5,2.5,0,0,9,0"),
        "{text}"
    );
    let summary = api.get(&format!("{base}/export"), &api.admin).await;
    assert_eq!(summary.status, StatusCode::BAD_REQUEST);

    // Another tenant's key finds no such cluster, on every cost route.
    for path in [
        format!("{base}?dimension=namespace"),
        format!("{base}/export?dimension=namespace"),
        format!("/v1/clusters/{cluster}/savings-reports"),
        format!("/v1/clusters/{cluster}/savings-reports/2026-11"),
    ] {
        assert_eq!(
            api.get(&path, &api.other_admin).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let reports = api
        .get(
            &format!("/v1/clusters/{cluster}/savings-reports"),
            &api.admin,
        )
        .await;
    assert_eq!(
        (
            reports.status,
            reports.body["items"].as_array().unwrap().len()
        ),
        (StatusCode::OK, 0)
    );
    let missing = api
        .get(
            &format!("/v1/clusters/{cluster}/savings-reports/2026-10"),
            &api.admin,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
