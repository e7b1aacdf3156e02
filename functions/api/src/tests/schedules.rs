//! `/v1/schedules`: cron validation, pause, resume, trigger and runs.

use super::*;

#[tokio::test]
async fn scheduled_runs_validate_cron_pause_resume_and_trigger() {
    let api = api().await;
    api.seed_cluster(None).await;
    let operator = api.key("operator").await;

    let checked = api
        .post(
            "/v1/schedules/validate-cron",
            &operator,
            json!({"cron": "0 6 * * MON-FRI", "time_zone": "America/New_York", "count": 3}),
        )
        .await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.body);
    assert_eq!(checked.body["next_runs"].as_array().unwrap().len(), 3);
    for (cron, message) in [
        ("0 24 * * *", "cron: hour: 24 is outside 0-23"),
        ("0 6 * *", "cron: expected 5 fields"),
        ("0 0 31 2 *", "cron: the expression never fires"),
    ] {
        let bad = api
            .post(
                "/v1/schedules/validate-cron",
                &operator,
                json!({"cron": cron}),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.body["error"]["field"], "cron");
        assert!(
            bad.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(message),
            "{}",
            bad.body
        );
    }

    let input = json!({"cluster_id": prod_cluster().as_str(), "name": "weekday plan",
        "kind": "optimize", "cron": "0 6 * * MON-FRI", "time_zone": "Europe/Berlin", "pause_after": 2});
    let created = api.post("/v1/schedules", &operator, input.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["schedule"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["next_runs"].as_array().unwrap().len(), 5);
    let mut unknown_cluster = input.clone();
    unknown_cluster["cluster_id"] = json!("nope");
    let refused = api.post("/v1/schedules", &operator, unknown_cluster).await;
    assert_eq!(refused.body["error"]["field"], "cluster_id");

    let paused = api
        .post(&format!("/v1/schedules/{id}/pause"), &operator, json!({}))
        .await;
    assert_eq!(paused.body["schedule"]["status"], "paused");
    assert_eq!(paused.body["next_runs"], json!([]));
    let resumed = api
        .post(&format!("/v1/schedules/{id}/resume"), &operator, json!({}))
        .await;
    assert_eq!(resumed.body["schedule"]["status"], "active");

    let triggered = api
        .post(&format!("/v1/schedules/{id}/trigger"), &operator, json!({}))
        .await;
    assert_eq!(triggered.status, StatusCode::ACCEPTED, "{}", triggered.body);
    assert_eq!(triggered.body["state"], "running");
    assert!(
        triggered.body["trigger"]
            .as_str()
            .unwrap()
            .starts_with("manual:")
    );
    let requests: Vec<spotwise_core::messages::OptimizeRequest> =
        api.stack.drain(api.state.run_queues.optimize.url()).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].scheduled.as_ref().unwrap().run_id,
        triggered.body["run_id"].as_str().unwrap()
    );
    let history = api
        .get(&format!("/v1/schedules/{id}/runs"), &operator)
        .await;
    assert_eq!(history.body["items"].as_array().unwrap().len(), 1);

    let mut renamed = input.clone();
    renamed["name"] = json!("renamed");
    let replaced = api
        .send(
            Method::PUT,
            &format!("/v1/schedules/{id}"),
            Some(&operator),
            Some(renamed),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        replaced.status,
        StatusCode::PRECONDITION_FAILED,
        "pausing, resuming and the trigger each moved the version"
    );
    let other = api
        .get(&format!("/v1/schedules/{id}"), &api.other_admin)
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let listed = api
        .get(
            &format!("/v1/schedules?cluster={}", prod_cluster()),
            &operator,
        )
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.delete(&format!("/v1/schedules/{id}"), &operator)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}
