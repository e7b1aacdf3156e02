//! The metrics and health endpoint.

use super::*;

#[tokio::test]
async fn metrics_and_health_are_served() {
    use tower::ServiceExt;
    let metrics = Metrics::new();
    let app = spotwise_agent::metrics::router(metrics.clone());
    let health = app
        .clone()
        .oneshot(
            axum::http::Request::get("/healthz")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "healthy while starting");
    assert!(
        !metrics.healthy(OffsetDateTime::now_utc() + Duration::minutes(5)),
        "no poll for minutes"
    );
    metrics.polled(OffsetDateTime::now_utc() + Duration::minutes(5));
    assert!(metrics.healthy(OffsetDateTime::now_utc() + Duration::minutes(5)));
    let page = app
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        page.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(
        axum::body::to_bytes(page.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("# TYPE spotwise_agent_results_pending gauge"),
        "{text}"
    );
}
