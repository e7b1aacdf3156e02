//! `/v1/health`, unknown routes and methods, and the Lambda event entry point.

use super::*;

#[tokio::test]
async fn health_and_unknown_routes_answer_in_the_json_shapes() {
    let api = api().await;
    let health = api.send(Method::GET, "/v1/health", None, None, &[]).await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok", "stage": "local"}))
    );
    let missing = api.send(Method::GET, "/v1/nope", None, None, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.body,
        json!({"error": {"code": "not_found", "message": "no route for /v1/nope"}})
    );
    let wrong_method = api
        .send(Method::PATCH, "/v1/webhooks", Some(&api.admin), None, &[])
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&wrong_method), "method_not_allowed");

    let response = invoke(
        app(api.state.clone()),
        &fixture("events/api/http-api-health.json"),
    )
    .await
    .unwrap();
    assert_eq!(
        (response.status_code, &response.body["status"]),
        (200, &json!("ok"))
    );
}

#[tokio::test]
async fn health_reports_unavailable_when_the_store_is_gone() {
    let api = api().await;
    let state = api.state.clone();
    drop(api);
    let response = app(state)
        .oneshot(Request::get("/v1/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
