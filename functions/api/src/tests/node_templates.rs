//! `/v1/clusters/{id}/node-templates`.

use super::*;

#[tokio::test]
async fn node_templates_are_validated_named_once_and_locked() {
    let api = api().await;
    api.seed_cluster(None).await;
    let operator = api.key("operator").await;
    let path = format!("/v1/clusters/{}/node-templates", prod_cluster());
    let general = json!({"name": "general", "instance_families": ["m5", "m6i"],
        "exclude_instance_types": ["*.metal"], "capacity_types": ["spot", "on-demand"],
        "max_vcpus": 16, "labels": {"pool": "general"},
        "taints": [{"key": "dedicated", "value": "general", "effect": "NoSchedule"}]});

    for (patch, field) in [
        (json!({"name": "General!"}), "name"),
        (json!({"instance_families": ["M5"]}), "instance_families[0]"),
        (
            json!({"exclude_instance_types": ["t2.*", "a b"]}),
            "exclude_instance_types[1]",
        ),
        (json!({"min_vcpus": 32}), "max_vcpus"),
        (
            json!({"taints": [{"key": "x", "effect": "Sometimes"}]}),
            "taints[0]",
        ),
        (json!({"architectures": ["sparc"]}), "architectures[0]"),
    ] {
        let mut body = general.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let reply = api.post(&path, &operator, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert_eq!(reply.body["error"]["field"], field, "{}", reply.body);
    }

    let created = api.post(&path, &operator, general.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let twice = api.post(&path, &operator, general.clone()).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);

    let one = format!("{path}/{id}");
    let mut narrower = general.clone();
    narrower["max_vcpus"] = json!(8);
    let replaced = api
        .send(
            Method::PUT,
            &one,
            Some(&operator),
            Some(narrower.clone()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["max_vcpus"], 8);
    let stale = api
        .send(
            Method::PUT,
            &one,
            Some(&operator),
            Some(narrower),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

    assert_eq!(
        api.get(&one, &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = api.get(&path, &operator).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.delete(&one, &operator).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get(&one, &operator).await.status, StatusCode::NOT_FOUND);
}
