//! `/v1/audit` and its export.

use super::*;

#[tokio::test]
async fn the_audit_log_filters_and_exports() {
    let api = api().await;
    for name in ["a", "b"] {
        let mut body = webhook("https://hooks.example.com/x");
        body["name"] = json!(name);
        api.post("/v1/webhooks", &api.admin, body).await;
    }
    api.key("viewer").await;
    let created = api.get("/v1/audit?action=webhook.create", &api.admin).await;
    assert_eq!(created.body["items"].as_array().unwrap().len(), 2);
    let since_future = api
        .get("/v1/audit?since=2100-01-01T00:00:00Z", &api.admin)
        .await;
    assert_eq!(since_future.body["items"].as_array().unwrap().len(), 0);

    let csv = api.get("/v1/audit/export", &api.admin).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.body.as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "id,at,actor,action,target,before,after");
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[4].contains("cli:bootstrap,key.bootstrap"),
        "the bootstrap is audited too: {text}"
    );
    let json_export = api
        .get("/v1/audit/export?format=json&action=key.create", &api.admin)
        .await;
    assert_eq!(json_export.body.as_array().unwrap().len(), 1);
    let bad = api.get("/v1/audit/export?format=xml", &api.admin).await;
    assert_eq!(
        (bad.status, &bad.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("format"))
    );
}
