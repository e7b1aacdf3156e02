//! What every route shares: request validation errors and list paging.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

#[tokio::test]
async fn invalid_requests_get_a_400_naming_the_field() {
    let api = api().await;
    let cases = [
        (
            "/v1/webhooks",
            json!({"name": "ops", "kind": "slack"}),
            "url",
        ),
        ("/v1/webhooks", webhook("https://10.1.2.3/hook"), "url"),
        (
            "/v1/webhooks",
            webhook("http://hooks.example.com/hook"),
            "url",
        ),
        ("/v1/webhooks", webhook("https://[fd00::1]/hook"), "url"),
        (
            "/v1/webhooks",
            json!({"name": "ops", "kind": "slack", "url": "https://hooks.example.com/x", "template": "{nope}"}),
            "template",
        ),
        (
            "/v1/webhooks",
            json!({"name": "ops", "kind": "generic", "url": "https://hooks.example.com/x", "secret": "short"}),
            "secret",
        ),
        (
            "/v1/webhooks",
            json!({"name": "ops", "kind": "pager", "url": "https://hooks.example.com/x"}),
            "kind",
        ),
        (
            "/v1/webhooks",
            json!({"name": "ops", "kind": "slack", "url": "https://hooks.example.com/x", "min_severity": "loud"}),
            "min_severity",
        ),
        (
            "/v1/webhooks",
            json!({"name": "ops", "kind": "slack", "url": "https://hooks.example.com/x", "colour": "red"}),
            "colour",
        ),
        (
            "/v1/webhooks",
            json!({"name": "ops", "kind": "slack", "url": "https://hooks.example.com/x", "rate_per_minute": 0}),
            "rate_per_minute",
        ),
        (
            "/v1/silences",
            json!({"matchers": [], "expires_at": "2030-01-01T00:00:00Z", "comment": "x"}),
            "matchers",
        ),
        (
            "/v1/silences",
            json!({"matchers": [{"label": "env", "op": "like", "value": "x"}], "expires_at": "2030-01-01T00:00:00Z", "comment": "x"}),
            "matchers[0].op",
        ),
        (
            "/v1/silences",
            json!({"matchers": [{"label": "env", "op": "equal", "value": "x"}], "expires_at": "2020-01-01T00:00:00Z", "comment": "x"}),
            "expires_at",
        ),
        (
            "/v1/maintenance-windows",
            json!({"name": "w", "rule": "FREQ=HOURLY", "starts": "2026-11-07T02:00:00Z", "duration_minutes": 60}),
            "rule",
        ),
        (
            "/v1/maintenance-windows",
            json!({"name": "w", "rule": "FREQ=DAILY", "starts": "yesterday", "duration_minutes": 60}),
            "starts",
        ),
        ("/v1/keys", json!({"name": "k", "role": "root"}), "role"),
        (
            "/v1/keys",
            json!({"name": "k", "role": "agent"}),
            "cluster_id",
        ),
    ];
    for (path, body, field) in cases {
        let reply = api.post(path, &api.admin, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            reply.body
        );
        assert_eq!(
            reply.body["error"]["field"], field,
            "{path} {body}: {}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{}",
            reply.body
        );
    }
    let broken = api
        .send(
            Method::POST,
            "/v1/webhooks",
            Some(&api.admin),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(
        (broken.status, error_code(&broken)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let not_json = api
        .send(Method::POST, "/v1/webhooks", Some(&api.admin), None, &[])
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let oversized = api
        .post(
            "/v1/webhooks",
            &api.admin,
            json!({"url": format!("https://hooks.example.com/{}", "a".repeat(500_000))}),
        )
        .await;
    assert_eq!(
        (oversized.status, error_code(&oversized)),
        (StatusCode::PAYLOAD_TOO_LARGE, "invalid_body"),
        "over the route's body limit, in the JSON error shape: {}",
        oversized.body
    );
    let look_alike = api
        .send(
            Method::POST,
            "/v1/webhooks",
            Some(&api.admin),
            None,
            &[("content-type", "application/jsonx")],
        )
        .await;
    assert_eq!(
        (look_alike.status, error_code(&look_alike)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_body"),
        "the media type is matched exactly"
    );
    for (path, field) in [
        ("/v1/webhooks?limit=0", "limit"),
        ("/v1/webhooks?limit=101", "limit"),
        ("/v1/webhooks?cursor=bm9wZQ", "cursor"),
    ] {
        let reply = api.get(path, &api.admin).await;
        assert_eq!(
            (reply.status, &reply.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{path}: {}",
            reply.body
        );
    }
    assert_eq!(
        api.get("/v1/webhooks?limit=many", &api.admin).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get("/v1/webhooks/a%23b", &api.admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn lists_page_through_every_item_once() {
    let api = api().await;
    let tenant = TenantId::new("t1").unwrap();
    let event: Value =
        serde_json::from_str(&fixture("events/webhook-dispatcher/sqs-notification.json")).unwrap();
    let base: Notification =
        serde_json::from_str(event["Records"][0]["body"].as_str().unwrap()).unwrap();
    let items: Vec<_> = (0..120)
        .map(|i| {
            let id = format!("{i:04}");
            Item::new(
                keys::notification(&tenant, &id),
                FeedEntry {
                    id,
                    notification: Notification {
                        dedup_key: format!("k{i}"),
                        ..base.clone()
                    },
                    suppressed: None,
                    endpoints: vec![],
                },
            )
        })
        .collect();
    api.state.store.batch_put(&items).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/notifications?limit=50&cursor={c}"),
            None => "/v1/notifications?limit=50".to_owned(),
        };
        let page = api.get(&path, &api.admin).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 120);
    assert_eq!(
        (seen[0].as_str(), seen[119].as_str()),
        ("0119", "0000"),
        "newest first"
    );
    assert!(pages >= 3);

    // A cursor of one tenant's list is refused in another's.
    let first = api.get("/v1/notifications?limit=10", &api.admin).await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let reused = api
        .get(
            &format!("/v1/notifications?limit=10&cursor={cursor}"),
            &api.other_admin,
        )
        .await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
}

/// The cases seen in the wild, each under the body limit but over a field's: a 400 naming the
/// field, never a 5xx.
#[tokio::test]
async fn oversized_fields_are_refused_by_name() {
    let api = api().await;
    api.seed_cluster(None).await;
    let cluster = prod_cluster();
    let policy = api
        .get(&format!("/v1/clusters/{cluster}/policy"), &api.admin)
        .await
        .body;
    let mut crowded_policy = policy.clone();
    crowded_policy["excluded_namespaces"] =
        json!((0..101).map(|i| format!("ns-{i}")).collect::<Vec<_>>());
    let mut crowded_hibernation = office_hours();
    crowded_hibernation["exclude_labels"] = json!(
        (0..51)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect::<serde_json::Map<_, _>>()
    );
    let mut long_label = office_hours();
    long_label["exclude_labels"] = json!({"team": "x".repeat(64)});
    let expires = spotwise_core::rfc3339(OffsetDateTime::now_utc() + time::Duration::days(1));
    let webhook = |field: &str, value: Value| {
        let mut body = json!({"name": "ops", "kind": "generic",
            "url": "https://hooks.example.com/ops"});
        body[field] = value;
        body
    };
    let cases = [
        (
            Method::PUT,
            format!("/v1/clusters/{cluster}/policy"),
            crowded_policy,
            "excluded_namespaces",
        ),
        (
            Method::PUT,
            format!("/v1/clusters/{cluster}/hibernation"),
            crowded_hibernation,
            "exclude_labels",
        ),
        (
            Method::PUT,
            format!("/v1/clusters/{cluster}/hibernation"),
            long_label,
            "exclude_labels.team",
        ),
        (
            Method::POST,
            "/v1/silences".to_owned(),
            json!({"matchers": [{"label": "cluster", "op": "equal", "value": "prod"}],
                "expires_at": expires, "comment": "c".repeat(1_001)}),
            "comment",
        ),
        (
            Method::POST,
            "/v1/webhooks".to_owned(),
            webhook(
                "url",
                json!(format!("https://hooks.example.com/{}", "a".repeat(2_048))),
            ),
            "url",
        ),
        (
            Method::POST,
            "/v1/webhooks".to_owned(),
            webhook("secret", json!("s".repeat(257))),
            "secret",
        ),
        (
            Method::POST,
            "/v1/webhooks".to_owned(),
            webhook("template", json!("t".repeat(4_001))),
            "template",
        ),
        (
            Method::POST,
            "/v1/schedules/validate-cron".to_owned(),
            json!({"cron": format!("0 6 * * {}", "1,".repeat(100))}),
            "cron",
        ),
    ];
    for (method, path, body, field) in cases {
        let reply = api
            .send(method.clone(), &path, Some(&api.admin), Some(body), &[])
            .await;
        assert_eq!(
            (reply.status, &reply.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{method} {path}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn malformed_paths_and_cursors_get_the_json_error_shape() {
    let api = api().await;
    // `%FF` is not UTF-8: no resource has that name, and the answer still says so in JSON.
    for path in [
        "/v1/clusters/%FF",
        "/v1/clusters/%FF/hibernation",
        "/v1/clusters/%FF/pod-history",
        "/v1/webhooks/%FF",
        "/v1/schedules/%FF",
        "/v1/actions/%FF",
    ] {
        let reply = api.get(path, &api.admin).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
        assert_eq!(error_code(&reply), "not_found", "{path}: {}", reply.body);
    }
    let reply = api.delete("/v1/keys/%FF", &api.admin).await;
    assert_eq!(error_code(&reply), "not_found", "{}", reply.body);

    // A cursor that names the partition but not the sort key it stopped at.
    let without_sort_key = hex::encode(r#"{"pk":"T#t1"}"#);
    let reply = api
        .get(
            &format!("/v1/clusters?cursor={without_sort_key}"),
            &api.admin,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.body["error"]["field"], "cursor");
}

/// Follows a `$ref` into the document's components.
fn resolved<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            resolved(document, &document["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A value shaped by `schema` whose strings, lists and maps are anywhere from empty to far past
/// their documented maximum, with numbers at their extremes; at most `budget` characters and
/// items in all.
fn oversized(
    document: &Value,
    schema: &Value,
    rng: &mut StdRng,
    depth: u32,
    budget: &mut usize,
) -> Value {
    let schema = resolved(document, schema);
    for combinator in ["oneOf", "anyOf"] {
        if let Some(choices) = schema[combinator].as_array().filter(|c| !c.is_empty()) {
            let choice = &choices[rng.random_range(0..choices.len())];
            return oversized(document, choice, rng, depth, budget);
        }
    }
    if let Some(parts) = schema["allOf"].as_array() {
        let mut merged = serde_json::Map::new();
        for part in parts {
            if let Value::Object(fields) = oversized(document, part, rng, depth, budget) {
                merged.extend(fields);
            }
        }
        return Value::Object(merged);
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.as_str(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema["properties"].is_object() => "object",
        _ => "string",
    };
    let size = |rng: &mut StdRng, max: Option<u64>| -> usize {
        let max = usize::try_from(max.unwrap_or(100)).unwrap_or(100);
        match rng.random_range(0..5) {
            0 => 0,
            1 => max,
            2 => max + 1,
            3 => max * 3 + 7,
            _ => rng.random_range(0..70_000),
        }
    };
    match kind {
        "object" if depth < 4 => {
            let mut fields = serde_json::Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    if rng.random_bool(0.9) {
                        fields.insert(
                            name.clone(),
                            oversized(document, property, rng, depth + 1, budget),
                        );
                    }
                }
            }
            if let Some(values) = schema["additionalProperties"].as_object() {
                let values = Value::Object(values.clone());
                let count = size(rng, schema["maxProperties"].as_u64()).min(*budget / 400);
                for _ in 0..count {
                    let key = "k".repeat(rng.random_range(0..400));
                    *budget = budget.saturating_sub(key.len());
                    fields.insert(key, oversized(document, &values, rng, depth + 1, budget));
                }
            }
            Value::Object(fields)
        }
        "array" if depth < 4 => {
            let count = size(rng, schema["maxItems"].as_u64()).min(*budget);
            *budget -= count;
            (0..count)
                .map(|_| oversized(document, &schema["items"], rng, depth + 1, budget))
                .collect()
        }
        "integer" => {
            json!([0, -1, 1, i64::MAX, i64::MIN, i64::from(u32::MAX)][rng.random_range(0..6)])
        }
        "number" => json!([0.0, -1.5, 1e300, -1e300, 0.5][rng.random_range(0..5)]),
        "boolean" => json!(rng.random_bool(0.5)),
        "string" => match schema["enum"].as_array() {
            Some(values) if rng.random_bool(0.5) && !values.is_empty() => {
                values[rng.random_range(0..values.len())].clone()
            }
            _ => {
                let length = size(rng, schema["maxLength"].as_u64()).min(*budget);
                *budget -= length;
                let alphabet = ['a', 'é', '😀', '#', '/', '\\', '\0', ' ', 'Z', '.'];
                json!(
                    (0..length)
                        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                        .collect::<String>()
                )
            }
        },
        _ => Value::Null,
    }
}

#[tokio::test]
async fn oversized_bodies_on_every_route_never_get_a_5xx() {
    let api = api().await;
    api.seed_cluster(None).await;
    let document = api.get("/v1/openapi.json", &api.admin).await.body;
    let mut rng = StdRng::seed_from_u64(20_261_203);
    let mut routes = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        let path = path
            .replace("{id}", prod_cluster().as_str())
            .replace("{revision}", "1")
            .replace("{template_id}", "01abc");
        for (method, operation) in operations.as_object().unwrap() {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            if schema.is_null() {
                continue;
            }
            routes += 1;
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for _ in 0..16 {
                // Past the 64 KiB body limit too, but not so far that building it is the test.
                let body = oversized(&document, schema, &mut rng, 0, &mut 150_000);
                let reply = api
                    .send(
                        method.clone(),
                        &path,
                        Some(&api.admin),
                        Some(body.clone()),
                        &[],
                    )
                    .await;
                let shown: String = body.to_string().chars().take(300).collect();
                assert!(
                    reply.status.as_u16() < 500,
                    "{method} {path}: {} {} for {shown}",
                    reply.status,
                    reply.body
                );
            }
        }
    }
    assert!(
        routes >= 18,
        "every route with a JSON body was tried: {routes}"
    );
}
