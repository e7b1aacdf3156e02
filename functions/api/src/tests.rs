//! Every route through the Router (`oneshot`) against the local stack's DynamoDB.

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use spotwise_core::config::Env;
use spotwise_core::domain::{Notification, Severity};
use spotwise_core::{ClusterId, TenantId};
use spotwise_notify::record::FeedEntry;
use spotwise_store::keys;
use spotwise_store::{Item, PutCondition};
use spotwise_testkit::receiver::Receiver;
use spotwise_testkit::{LocalStack, fixture, records};
use time::OffsetDateTime;
use tower::ServiceExt;

use super::*;

struct Api {
    /// The emulator the API under test talks to; tests read its queues.
    stack: LocalStack,
    state: AppState,
    /// Admin keys of tenants t1 and t2.
    admin: String,
    other_admin: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn api_with(overrides: &[(&str, &str)]) -> Api {
    let stack = LocalStack::start();
    let mut env = stack.function_env("ApiFunction");
    for (name, value) in overrides {
        env.insert((*name).into(), (*value).into());
    }
    let config = Config::from_env(&Env::from_map(env)).unwrap();
    let state = AppState::new(&stack.sdk_config().await, &config).unwrap();
    let now = OffsetDateTime::now_utc();
    let admin = auth::bootstrap(&state.store, &TenantId::new("t1").unwrap(), "Acme", now)
        .await
        .unwrap()
        .secret;
    let other_admin = auth::bootstrap(&state.store, &TenantId::new("t2").unwrap(), "Globex", now)
        .await
        .unwrap()
        .secret;
    Api {
        stack,
        state,
        admin,
        other_admin,
    }
}

async fn api() -> Api {
    api_with(&[]).await
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(Method::GET, path, Some(key), None, &[]).await
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(key), Some(body), &[])
            .await
    }

    async fn delete(&self, path: &str, key: &str) -> Reply {
        self.send(Method::DELETE, path, Some(key), None, &[]).await
    }

    /// A new key of t1 with `role`.
    async fn key(&self, role: &str) -> String {
        let reply = self
            .post("/v1/keys", &self.admin, json!({"name": role, "role": role}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["secret"].as_str().unwrap().to_owned()
    }
}

fn webhook(url: &str) -> Value {
    json!({"name": "ops", "kind": "generic", "url": url, "secret": "whsec_0123456789abcdef"})
}

fn error_code(reply: &Reply) -> &str {
    reply.body["error"]["code"].as_str().unwrap_or_default()
}

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

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let api = api().await;
    let none = api.send(Method::GET, "/v1/tenant", None, None, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        api.get("/v1/tenant", "garbage").await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut forged = api.admin.clone();
    forged.pop();
    forged.push('x');
    assert_eq!(
        api.get("/v1/tenant", &forged).await.status,
        StatusCode::UNAUTHORIZED
    );

    let ok = api.get("/v1/tenant", &api.admin).await;
    assert_eq!(
        (ok.status, &ok.body["name"]),
        (StatusCode::OK, &json!("Acme"))
    );
    let by_header = api
        .send(
            Method::GET,
            "/v1/tenant",
            None,
            None,
            &[("x-api-key", &api.admin)],
        )
        .await;
    assert_eq!(by_header.status, StatusCode::OK);

    let viewer = api.key("viewer").await;
    let id = api.get("/v1/keys", &api.admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.delete(&format!("/v1/keys/{id}"), &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let revoked = api.get("/v1/tenant", &viewer).await;
    assert_eq!(
        (
            revoked.status,
            revoked.body["error"]["message"].as_str().unwrap()
        ),
        (StatusCode::UNAUTHORIZED, "the API key was revoked")
    );
    let listed = api.get("/v1/keys", &api.admin).await;
    assert!(
        !listed.body.to_string().contains("secret_sha256"),
        "hashes are never listed"
    );
}

#[tokio::test]
async fn roles_gate_every_mutation() {
    let api = api().await;
    let (viewer, operator) = (api.key("viewer").await, api.key("operator").await);
    let hook = webhook("https://hooks.example.com/spotwise");

    let denied = api.post("/v1/webhooks", &viewer, hook.clone()).await;
    assert_eq!(
        (denied.status, error_code(&denied)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert_eq!(
        api.post("/v1/webhooks", &operator, hook).await.status,
        StatusCode::CREATED
    );
    let seen = api.get("/v1/webhooks", &viewer).await;
    assert_eq!(seen.status, StatusCode::OK);
    // Chat webhook URLs are credentials: viewers see scheme, host and the last characters.
    assert_eq!(
        seen.body["items"][0]["url"],
        "https://hooks.example.com/…wise"
    );
    assert_eq!(
        api.get("/v1/webhooks", &operator).await.body["items"][0]["url"],
        "https://hooks.example.com/spotwise"
    );
    assert_eq!(
        api.post("/v1/keys", &operator, json!({"name": "x", "role": "admin"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get("/v1/keys", &operator).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.get("/v1/audit", &operator).await.status,
        StatusCode::FORBIDDEN
    );
    let silence = json!({"matchers": [{"label": "env", "op": "equal", "value": "dev"}],
        "expires_at": spotwise_core::rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1)), "comment": "noise"});
    assert_eq!(
        api.post("/v1/silences", &viewer, silence.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.post("/v1/silences", &operator, silence).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn one_tenants_key_finds_nothing_of_another_tenant() {
    let api = api().await;
    let created = api
        .post(
            "/v1/webhooks",
            &api.admin,
            webhook("https://hooks.example.com/a"),
        )
        .await;
    let id = created.body["webhook"]["id"].as_str().unwrap().to_owned();
    let silence = api.post("/v1/silences", &api.admin, json!({"matchers": [{"label": "env", "op": "equal", "value": "dev"}],
        "expires_at": spotwise_core::rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1)), "comment": "noise"})).await;
    let window = api
        .post(
            "/v1/maintenance-windows",
            &api.admin,
            json!({"name": "patching", "rule": "FREQ=WEEKLY;BYDAY=SA",
        "starts": "2026-11-07T02:00:00Z", "duration_minutes": 120}),
        )
        .await;
    assert_eq!(
        (silence.status, window.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    let (silence_id, window_id) = (
        silence.body["id"].as_str().unwrap(),
        window.body["id"].as_str().unwrap(),
    );
    let own_key = api.get("/v1/keys", &api.admin).await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let b = &api.other_admin;
    for path in [
        format!("/v1/webhooks/{id}"),
        format!("/v1/webhooks/{id}/deliveries"),
    ] {
        assert_eq!(
            api.get(&path, b).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let put = api
        .send(
            Method::PUT,
            &format!("/v1/webhooks/{id}"),
            Some(b),
            Some(webhook("https://hooks.example.com/b")),
            &[],
        )
        .await;
    assert_eq!(put.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.post(&format!("/v1/webhooks/{id}/test"), b, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    for path in [
        format!("/v1/webhooks/{id}"),
        format!("/v1/silences/{silence_id}"),
        format!("/v1/maintenance-windows/{window_id}"),
        format!("/v1/keys/{own_key}"),
    ] {
        assert_eq!(
            api.delete(&path, b).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for list in [
        "/v1/webhooks",
        "/v1/silences",
        "/v1/maintenance-windows",
        "/v1/notifications",
        "/v1/audit",
    ] {
        let reply = api.get(list, b).await;
        assert_eq!(reply.status, StatusCode::OK, "{list}");
        let items = reply.body["items"].as_array().unwrap();
        assert!(
            items
                .iter()
                .all(|i| !i.to_string().contains(&id) && !i.to_string().contains("patching")),
            "{list}: {items:?}"
        );
    }
    assert_eq!(
        api.get(&format!("/v1/webhooks/{id}"), &api.admin)
            .await
            .status,
        StatusCode::OK,
        "still there for its tenant"
    );
}

#[tokio::test]
async fn agent_keys_reach_no_tenant_data() {
    let api = api().await;
    let tenant = TenantId::new("t1").unwrap();
    let cluster = ClusterId::new("111122223333.us-east-1.prod").unwrap();
    api.state
        .store
        .put(
            &Item::new(
                keys::cluster(&tenant, &cluster),
                records::cluster(&tenant, &cluster, None),
            ),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let created = api
        .post(
            "/v1/keys",
            &api.admin,
            json!({"name": "prod agent", "role": "agent", "cluster_id": cluster.to_string()}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["key"]["cluster_id"], cluster.to_string());
    let agent = created.body["secret"].as_str().unwrap();
    for path in [
        "/v1/tenant",
        "/v1/webhooks",
        "/v1/notifications",
        "/v1/keys",
        "/v1/audit",
    ] {
        let reply = api.get(path, agent).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
    }
    let unknown = api
        .post(
            "/v1/keys",
            &api.admin,
            json!({"name": "x", "role": "agent", "cluster_id": "111122223333.us-east-1.nope"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let other_tenant = api
        .post(
            "/v1/keys",
            &api.other_admin,
            json!({"name": "x", "role": "agent", "cluster_id": cluster.to_string()}),
        )
        .await;
    assert_eq!(
        other_tenant.status,
        StatusCode::NOT_FOUND,
        "a cluster of another tenant"
    );
}

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

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after() {
    let api = api_with(&[("API_RATE_PER_MINUTE", "6"), ("API_RATE_BURST", "2")]).await;
    assert_eq!(
        api.get("/v1/tenant", &api.admin).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/v1/tenant", &api.admin).await.status,
        StatusCode::OK
    );
    let limited = api.get("/v1/tenant", &api.admin).await;
    assert_eq!(
        (limited.status, error_code(&limited)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(limited.headers[header::RETRY_AFTER], "10");
    assert_eq!(
        api.get("/v1/tenant", &api.other_admin).await.status,
        StatusCode::OK,
        "another key has its own bucket"
    );
}

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

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let api = api().await;
    let doc = api
        .send(Method::GET, "/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: HashSet<&str> = doc.body["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for route in [
        "/v1/health",
        "/v1/tenant",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/test",
        "/v1/webhooks/{id}/deliveries",
        "/v1/silences",
        "/v1/silences/{id}",
        "/v1/maintenance-windows",
        "/v1/maintenance-windows/{id}",
        "/v1/notifications",
        "/v1/audit",
        "/v1/audit/export",
        "/v1/clusters",
        "/v1/clusters/{id}",
        "/v1/clusters/{id}/policy",
        "/v1/clusters/{id}/recommendations",
        "/v1/clusters/{id}/recommendations/{revision}",
        "/v1/clusters/{id}/recommendations/{revision}/approve",
        "/v1/actions",
        "/v1/actions/{id}",
        "/v1/actions/{id}/cancel",
        "/v1/agent/heartbeat",
        "/v1/agent/actions/{id}",
        "/v1/agent/actions/{id}/result",
        "/v1/agent/snapshot",
        "/v1/clusters/{id}/costs",
        "/v1/clusters/{id}/costs/export",
        "/v1/clusters/{id}/savings-reports",
        "/v1/clusters/{id}/savings-reports/{month}",
        "/v1/accounts",
        "/v1/accounts/external-id",
        "/v1/accounts/{id}",
        "/v1/accounts/{id}/validate",
        "/v1/clusters/{id}/hibernation",
        "/v1/clusters/{id}/hibernation/wake",
        "/v1/clusters/{id}/hibernation/preview",
        "/v1/clusters/{id}/hibernation/sleeps",
        "/v1/schedules",
        "/v1/schedules/validate-cron",
        "/v1/schedules/{id}",
        "/v1/schedules/{id}/pause",
        "/v1/schedules/{id}/resume",
        "/v1/schedules/{id}/trigger",
        "/v1/schedules/{id}/runs",
        "/v1/clusters/{id}/node-templates",
        "/v1/clusters/{id}/node-templates/{template_id}",
        "/v1/clusters/{id}/pod-history",
    ] {
        assert!(paths.contains(route), "{route} missing from {paths:?}");
    }
    assert_eq!(
        doc.body["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert!(doc.body["components"]["schemas"]["WebhookInput"].is_object());
    let text = doc.body.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc.body["components"]["schemas"][name].is_object(),
            "unresolved $ref {name}"
        );
    }
    let docs = api.send(Method::GET, "/v1/docs", None, None, &[]).await;
    assert!(docs.body.as_str().unwrap().contains("/v1/openapi.json"));
}

fn prod_cluster() -> ClusterId {
    ClusterId::new("111122223333.us-east-1.prod").unwrap()
}

impl Api {
    async fn seed_cluster(&self, agent_queue_url: Option<String>) {
        let tenant = TenantId::new("t1").unwrap();
        let cluster = prod_cluster();
        self.state
            .store
            .put(
                &Item::new(
                    keys::cluster(&tenant, &cluster),
                    records::cluster(&tenant, &cluster, agent_queue_url),
                ),
                PutCondition::Always,
            )
            .await
            .unwrap();
    }

    async fn agent_key(&self) -> String {
        let created = self
            .post(
                "/v1/keys",
                &self.admin,
                json!({"name": "agent", "role": "agent", "cluster_id": prod_cluster().to_string()}),
            )
            .await;
        created.body["secret"].as_str().unwrap().to_owned()
    }

    async fn seed_action(&self, id: &str, cluster: &ClusterId) {
        let tenant = TenantId::new("t1").unwrap();
        let now = OffsetDateTime::now_utc();
        let record = spotwise_core::action::ActionRecord {
            tenant_id: tenant.clone(),
            action: spotwise_core::action::AgentAction {
                action_id: id.into(),
                cluster_id: cluster.clone(),
                spec: spotwise_core::action::ActionSpec::Drain {
                    node: "ip-10-0-1-17.ec2.internal".into(),
                    taint: None,
                    lifecycle_hook: None,
                },
                reason: "test".into(),
                issued_at: now,
                not_after: now + time::Duration::minutes(5),
                signature: "00".into(),
            },
            status: spotwise_core::action::ActionStatus::Queued,
            status_reason: None,
            source: "test".into(),
            instance_id: None,
            previous_replicas: None,
            created_at: now,
            updated_at: now,
        };
        self.state
            .store
            .put(
                &Item::new(keys::action(&tenant, id), record),
                PutCondition::Always,
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn clusters_and_policies_are_read_and_replaced_per_tenant() {
    let api = api().await;
    api.seed_cluster(None).await;
    let id = prod_cluster().to_string();
    let listed = api.get("/v1/clusters", &api.admin).await;
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
    assert!(
        api.get("/v1/clusters", &api.other_admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.get(&format!("/v1/clusters/{id}"), &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let detail = api.get(&format!("/v1/clusters/{id}"), &api.admin).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert_eq!(
        detail.body["snapshot_problem"],
        "the agent has not uploaded a snapshot"
    );

    let path = format!("/v1/clusters/{id}/policy");
    let policy = api.get(&path, &api.admin).await;
    assert_eq!(
        (
            policy.headers[header::ETAG].to_str().unwrap(),
            &policy.body["mode"]
        ),
        ("\"0\"", &json!("recommend"))
    );
    let mut changed = policy.body.clone();
    changed["mode"] = json!("auto");
    changed["min_spot_pools"] = json!(4);
    let put = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed.clone()),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(
        (put.status, put.headers[header::ETAG].to_str().unwrap()),
        (StatusCode::OK, "\"1\""),
        "{}",
        put.body
    );
    let stale = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed.clone()),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(api.get(&path, &api.admin).await.body["mode"], "auto");
    changed["min_spot_pools"] = json!(0);
    let invalid = api
        .send(
            Method::PUT,
            &path,
            Some(&api.admin),
            Some(changed.clone()),
            &[],
        )
        .await;
    assert_eq!(
        (invalid.status, &invalid.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("min_spot_pools"))
    );
    let other = api
        .send(
            Method::PUT,
            &path,
            Some(&api.other_admin),
            Some(policy.body),
            &[],
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn agent_reports_reach_the_cluster_and_its_actions() {
    let api = api().await;
    api.seed_cluster(None).await;
    let agent = api.agent_key().await;
    let cluster = prod_cluster();

    let beat = api
        .post(
            "/v1/agent/heartbeat",
            &agent,
            json!({"agent_version": "0.1.0", "dry_run": false, "rejected": [
                {"reason": "bad signature", "at": "2026-12-01T10:00:00Z"}
            ]}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::NO_CONTENT, "{}", beat.body);
    let told: Vec<Notification> = api.stack.drain(api.state.notifications.url()).await;
    assert_eq!(
        told.iter()
            .map(|n| (n.event_type.as_str(), n.severity))
            .collect::<Vec<_>>(),
        [("action_rejected", Severity::Warning)],
        "a refused message is a security signal"
    );
    assert_eq!(
        api.post(
            "/v1/agent/heartbeat",
            &api.admin,
            json!({"agent_version": "x", "dry_run": false})
        )
        .await
        .status,
        StatusCode::FORBIDDEN,
        "user keys are not agents"
    );
    let snapshot = spotwise_core::snapshot::parse_list(
        fixture("events/optimizer/kubectl-snapshot.json").as_bytes(),
    )
    .unwrap();
    let uploaded = api
        .send(
            Method::PUT,
            "/v1/agent/snapshot",
            Some(&agent),
            Some(serde_json::to_value(&snapshot).unwrap()),
            &[],
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.body);
    let broken = api
        .send(
            Method::PUT,
            "/v1/agent/snapshot",
            Some(&agent),
            Some(json!({"nodes": "none"})),
            &[],
        )
        .await;
    assert_eq!(
        (broken.status, &broken.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("nodes"))
    );

    let detail = api
        .get(&format!("/v1/clusters/{cluster}"), &api.admin)
        .await;
    assert_eq!(detail.body["agent"]["agent_version"], "0.1.0");
    assert_eq!(detail.body["snapshot"]["nodes"], snapshot.nodes.len());
    let kinds: Vec<&str> = detail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let mut kinds = kinds;
    // The heartbeat's two events can share a millisecond, and so their order.
    kinds[1..].sort_unstable();
    assert_eq!(kinds, ["snapshot", "action_rejected", "agent_online"]);

    api.seed_action("a1", &cluster).await;
    api.seed_action("a2", &cluster).await;
    api.seed_action(
        "elsewhere",
        &ClusterId::new("111122223333.us-east-1.other").unwrap(),
    )
    .await;
    assert_eq!(
        api.get("/v1/agent/actions/a1", &agent).await.body["status"],
        "queued"
    );
    assert_eq!(
        api.get("/v1/agent/actions/elsewhere", &agent).await.status,
        StatusCode::NOT_FOUND,
        "another cluster's action"
    );

    let cancelled = api
        .post("/v1/actions/a1/cancel", &api.admin, json!({}))
        .await;
    assert_eq!(
        (cancelled.status, &cancelled.body["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    assert_eq!(
        api.get("/v1/agent/actions/a1", &agent).await.body["status"],
        "cancelled"
    );

    let report = json!({"outcome": "succeeded", "detail": "node drained: 4 evicted", "pods_left": {"shop/cart-0": "PDB"}});
    let done = api
        .post("/v1/agent/actions/a2/result", &agent, report.clone())
        .await;
    assert_eq!(
        (done.status, &done.body["status"]),
        (StatusCode::OK, &json!("succeeded")),
        "{}",
        done.body
    );
    assert!(
        done.body["status_reason"]
            .as_str()
            .unwrap()
            .contains("shop/cart-0 (PDB)")
    );
    assert_eq!(
        api.post("/v1/agent/actions/a2/result", &agent, report)
            .await
            .status,
        StatusCode::OK,
        "a repeat changes nothing"
    );
    let told: Vec<Notification> = api.stack.drain(api.state.notifications.url()).await;
    assert_eq!(told.len(), 1, "told once, repeat or not: {told:?}");
    assert_eq!(
        (told[0].event_type.as_str(), &told[0].labels["outcome"]),
        ("action_result", &"succeeded".to_owned())
    );
    let late_cancel = api
        .post("/v1/actions/a2/cancel", &api.admin, json!({}))
        .await;
    assert_eq!(late_cancel.status, StatusCode::CONFLICT);
    let listed = api
        .get(&format!("/v1/actions?cluster={cluster}"), &api.admin)
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.get("/v1/actions/a2", &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
}

fn recommendation(revision: u64) -> Value {
    json!({
        "id": format!("rec{revision}"), "revision": revision, "tenant_id": "t1", "cluster_id": prod_cluster().to_string(),
        "trigger": "schedule", "mode": "recommend", "status": "proposed", "snapshot_id": "s1",
        "created_at": "2026-11-24T10:00:00Z", "cost_hr": 0.5,
        "summary": {"pods": 10, "placed_pods": 10, "nodes": 2, "spot_nodes": 1, "monthly_cost": 365.0,
            "on_demand_equivalent_monthly": 500.0, "current_monthly_cost": 600.0, "monthly_savings": 235.0,
            "spot_cost_share": 0.5, "spot_pod_share": 0.5, "spot_pools": 1, "risk_score": 10.0,
            "cpu_utilisation": 0.7, "mem_utilisation": 0.6, "explanation": []},
        "node_mix": [], "unschedulable": [],
        "consolidation": {"current_cost_hr": 0.8, "after_cost_hr": 0.5, "budget": 1, "waves": [[0], [1]],
            "steps": [
                {"kind": "remove", "node": "ip-10-0-2-13.ec2.internal", "saving_hr": 0.1, "moves": [], "reason": "its pods fit elsewhere"},
                {"kind": "remove", "node": "ip-10-0-1-12.ec2.internal", "saving_hr": 0.2, "moves": [], "reason": "its pods fit elsewhere"}
            ],
            "blocked": []},
        "right_sizing": null, "pools_in_cooldown": [], "action_ids": []
    })
}

#[tokio::test]
async fn approving_the_newest_plan_sends_its_first_wave() {
    let api = api().await;
    let tenant = TenantId::new("t1").unwrap();
    let cluster = prod_cluster();
    for revision in [1, 2] {
        let rec: spotwise_optimizer::recommendation::Recommendation =
            serde_json::from_value(recommendation(revision)).unwrap();
        api.state
            .store
            .put(
                &Item::new(keys::recommendation(&tenant, &cluster, revision), rec),
                PutCondition::Always,
            )
            .await
            .unwrap();
    }
    api.seed_cluster(None).await;
    let operator = api.key("operator").await;
    let base = format!("/v1/clusters/{cluster}/recommendations");
    let listed = api.get(&base, &api.admin).await;
    let revisions: Vec<u64> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [2, 1]);

    let old = api
        .post(&format!("{base}/1/approve"), &operator, json!({}))
        .await;
    assert_eq!(
        (old.status, error_code(&old)),
        (StatusCode::CONFLICT, "superseded")
    );
    let viewer = api.key("viewer").await;
    assert_eq!(
        api.post(&format!("{base}/2/approve"), &viewer, json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let approved = api
        .post(&format!("{base}/2/approve"), &operator, json!({}))
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "applying");
    let ids = approved.body["action_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "only the first wave");
    let action = api
        .get(
            &format!("/v1/actions/{}", ids[0].as_str().unwrap()),
            &api.admin,
        )
        .await;
    assert_eq!(
        action.body["action"]["target"]["name"],
        "ip-10-0-2-13.ec2.internal"
    );
    assert_eq!(
        action.body["status"], "undeliverable",
        "the cluster has no agent installed yet"
    );
    assert_eq!(
        api.post(&format!("{base}/2/approve"), &operator, json!({}))
            .await
            .status,
        StatusCode::CONFLICT,
        "approved once"
    );
    assert_eq!(
        api.get(&format!("{base}/2"), &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
}

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

#[tokio::test]
async fn accounts_are_linked_with_the_tenants_external_id() {
    let api = api().await;
    let role = "arn:aws:iam::111122223333:role/SpotwiseAccess";
    let early = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(
        (early.status, error_code(&early)),
        (StatusCode::CONFLICT, "no_external_id")
    );

    let issued = api
        .post("/v1/accounts/external-id", &api.admin, json!({}))
        .await;
    let external_id = issued.body["external_id"].as_str().unwrap().to_owned();
    assert!(external_id.starts_with("sw-"));
    assert_eq!(
        api.post("/v1/accounts/external-id", &api.admin, json!({}))
            .await
            .body["external_id"],
        external_id.as_str(),
        "stable"
    );
    let other = api
        .post("/v1/accounts/external-id", &api.other_admin, json!({}))
        .await;
    assert_ne!(
        other.body["external_id"],
        external_id.as_str(),
        "per tenant"
    );

    for (body, field) in [
        (
            json!({"role_arn": "arn:aws:iam::1111:role/x", "regions": ["us-east-1"]}),
            "role_arn",
        ),
        (json!({"role_arn": role, "regions": []}), "regions"),
        (
            json!({"role_arn": role, "regions": ["mars-1"]}),
            "regions[0]",
        ),
    ] {
        let reply = api.post("/v1/accounts", &api.admin, body).await;
        assert_eq!(
            (reply.status, &reply.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{}",
            reply.body
        );
    }
    let linked = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1", "eu-west-1"]}),
        )
        .await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.body);
    assert_eq!(
        (&linked.body["account_id"], &linked.body["external_id"]),
        (&json!("111122223333"), &json!(external_id))
    );
    let again = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let elsewhere = api
        .post(
            "/v1/accounts",
            &api.other_admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::CONFLICT, "{}", elsewhere.body);
    assert!(
        elsewhere.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another Spotwise tenant"),
        "one tenant per AWS account, so cluster partitions are never shared"
    );

    let validated = api
        .post("/v1/accounts/111122223333/validate", &api.admin, json!({}))
        .await;
    assert_eq!(
        validated.body["health"]["state"], "healthy",
        "{}",
        validated.body
    );
    assert_eq!(
        api.get("/v1/accounts", &api.admin).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        api.get("/v1/accounts", &api.other_admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.delete("/v1/accounts/111122223333", &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/v1/accounts/111122223333", &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let moved = api
        .post(
            "/v1/accounts",
            &api.other_admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(
        moved.status,
        StatusCode::CREATED,
        "free once unlinked: {}",
        moved.body
    );
    let audited: Vec<String> = api.get("/v1/audit", &api.admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for action in ["account.external_id", "account.validate", "account.unlink"] {
        assert!(audited.iter().any(|a| a == action), "{action}: {audited:?}");
    }
    assert!(
        api.get("/v1/accounts", &api.admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn office_hours() -> Value {
    let weekday = format!("{}{}{}", "0".repeat(8), "1".repeat(12), "0".repeat(4));
    let weekend = "0".repeat(24);
    json!({
        "enabled": true,
        "time_zone": "Europe/Berlin",
        "awake": [weekday, weekday, weekday, weekday, weekday, weekend, weekend],
        "exclude_namespaces": ["payments"],
    })
}

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

    let audit = api.get("/v1/audit", &api.admin).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
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

#[tokio::test]
async fn each_snapshot_adds_what_changed_to_the_pod_history() {
    let api = api().await;
    api.seed_cluster(None).await;
    let agent = api.agent_key().await;
    let mut snapshot = spotwise_core::snapshot::parse_list(
        fixture("events/optimizer/kubectl-snapshot.json").as_bytes(),
    )
    .unwrap();
    let upload = |body: Value| {
        let api = &api;
        let agent = agent.clone();
        async move {
            let reply = api
                .send(
                    Method::PUT,
                    "/v1/agent/snapshot",
                    Some(&agent),
                    Some(body),
                    &[],
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    };
    upload(serde_json::to_value(&snapshot).unwrap()).await;
    let moved = &mut snapshot.pods[0];
    let pod = format!("{}/{}", moved.workload.namespace, moved.workload.name);
    moved.spec.node = Some("ip-10-0-9-99.ec2.internal".into());
    let gone = snapshot.pods.remove(1);
    upload(serde_json::to_value(&snapshot).unwrap()).await;

    let path = format!("/v1/clusters/{}/pod-history", prod_cluster());
    let all = api.get(&path, &api.admin).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let changes: Vec<(String, String)> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pod"].as_str().unwrap().to_owned(),
                e["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.contains(&(pod.clone(), "moved".to_owned())));
    assert!(changes.contains(&(
        format!("{}/{}", gone.workload.namespace, gone.workload.name),
        "gone".to_owned()
    )));

    let one = api.get(&format!("{path}?pod={pod}"), &api.admin).await;
    let items = one.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["to"], "ip-10-0-9-99.ec2.internal");
    let bad = api.get(&format!("{path}?pod=nope"), &api.admin).await;
    assert_eq!(bad.body["error"]["field"], "pod");
    assert_eq!(
        api.get(&path, &api.other_admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get(&path, &agent).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn installing_an_agent_gives_its_cluster_a_queue_a_secret_and_a_key() {
    let api = api().await;
    api.seed_cluster(None).await;
    let cluster = prod_cluster();
    let tenant = TenantId::new("t1").unwrap();
    let path = format!("/v1/clusters/{cluster}/agent");
    let role = "arn:aws:iam::111122223333:role/SpotwiseAgent";

    let operator = api.key("operator").await;
    assert_eq!(
        api.post(&path, &operator, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.post(&path, &api.other_admin, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    let foreign = api
        .post(
            &path,
            &api.admin,
            json!({"agent_role_arn": "arn:aws:iam::999999999999:role/agent"}),
        )
        .await;
    assert_eq!(
        (foreign.status, &foreign.body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("agent_role_arn")),
        "only a role in the cluster's own account may read its queue"
    );

    let installed = api
        .post(&path, &api.admin, json!({"agent_role_arn": role}))
        .await;
    assert_eq!(installed.status, StatusCode::CREATED, "{}", installed.body);
    let queue_url = installed.body["queue_url"].as_str().unwrap().to_owned();
    assert!(queue_url.ends_with(".fifo"), "{queue_url}");
    let policy = api
        .state
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::Policy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::Policy]
        .clone();
    assert!(
        policy.contains(role) && policy.contains("sqs:ReceiveMessage"),
        "{policy}"
    );

    // The platform now signs with the secret the manifest holds, and queues to this queue.
    let secret = installed.body["cluster_secret"].as_str().unwrap();
    let channel = spotwise_store::actions::channel(&api.state.store, &tenant, &cluster)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (channel.queue_url.as_str(), channel.secret),
        (queue_url.as_str(), hex::decode(secret).unwrap())
    );
    let agent_key = installed.body["agent_key"].as_str().unwrap().to_owned();
    assert_eq!(
        api.post(
            "/v1/agent/heartbeat",
            &agent_key,
            json!({"agent_version": "0.1.0", "dry_run": false})
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );

    let again = api.post(&path, &api.admin, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let rotated = api
        .post(
            &path,
            &api.admin,
            json!({"agent_role_arn": role, "rotate": true}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    assert_eq!(rotated.body["queue_url"], queue_url.as_str(), "same queue");
    assert_ne!(rotated.body["cluster_secret"], secret, "a new secret");
    let beat = json!({"agent_version": "0.1.0", "dry_run": false});
    assert_eq!(
        api.post("/v1/agent/heartbeat", &agent_key, beat.clone())
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "the old key went with the old secret"
    );
    assert_eq!(
        api.post(
            "/v1/agent/heartbeat",
            rotated.body["agent_key"].as_str().unwrap(),
            beat
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );

    let audit = api.get("/v1/audit", &api.admin).await.body.to_string();
    assert!(audit.contains("cluster.agent_install") && audit.contains("cluster.agent_rotate"));
    assert!(
        !audit.contains(secret),
        "the secret is never in the audit log"
    );
    assert!(!audit.contains(&agent_key));
}

#[tokio::test]
async fn another_tenants_key_can_change_nothing_of_a_tenant() {
    let api = api().await;
    api.seed_cluster(None).await;
    let cluster = prod_cluster();
    api.seed_action("a1", &cluster).await;
    let schedule = api
        .post(
            "/v1/schedules",
            &api.admin,
            json!({"cluster_id": cluster.as_str(), "name": "nightly", "kind": "optimize",
                   "cron": "0 2 * * *", "time_zone": "UTC"}),
        )
        .await;
    assert_eq!(schedule.status, StatusCode::CREATED, "{}", schedule.body);
    let schedule = schedule.body["schedule"]["id"].as_str().unwrap().to_owned();
    let template = api
        .post(
            &format!("/v1/clusters/{cluster}/node-templates"),
            &api.admin,
            json!({"name": "general", "instance_families": ["m5"]}),
        )
        .await;
    assert_eq!(template.status, StatusCode::CREATED, "{}", template.body);
    let template = template.body["id"].as_str().unwrap().to_owned();
    let hibernation = api
        .send(
            Method::PUT,
            &format!("/v1/clusters/{cluster}/hibernation"),
            Some(&api.admin),
            Some(office_hours()),
            &[],
        )
        .await;
    assert_eq!(hibernation.status, StatusCode::OK, "{}", hibernation.body);

    let c = format!("/v1/clusters/{cluster}");
    let mut policy = api.get(&format!("{c}/policy"), &api.admin).await.body;
    policy["mode"] = json!("auto");
    let until = spotwise_core::rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(2));
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::PUT, format!("{c}/policy"), Some(policy)),
        (Method::POST, format!("{c}/agent"), Some(json!({}))),
        (
            Method::POST,
            format!("{c}/recommendations/1/approve"),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("{c}/hibernation"),
            Some(office_hours()),
        ),
        (Method::DELETE, format!("{c}/hibernation"), None),
        (
            Method::POST,
            format!("{c}/hibernation/wake"),
            Some(json!({"until": until})),
        ),
        (
            Method::DELETE,
            format!("{c}/node-templates/{template}"),
            None,
        ),
        (
            Method::POST,
            "/v1/actions/a1/cancel".into(),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/schedules/{schedule}/pause"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/schedules/{schedule}/trigger"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/v1/schedules/{schedule}"), None),
        (
            Method::POST,
            "/v1/accounts/111122223333/validate".into(),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in attempts {
        let reply = api
            .send(method.clone(), &path, Some(&api.other_admin), body, &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.body
        );
    }
    // Everything is as it was.
    assert_eq!(
        api.get("/v1/actions/a1", &api.admin).await.body["status"],
        "queued"
    );
    assert_eq!(
        api.get(&format!("/v1/schedules/{schedule}"), &api.admin)
            .await
            .body["schedule"]["status"],
        "active"
    );
    assert_eq!(
        api.get(&format!("{c}/hibernation"), &api.admin)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("{c}/policy"), &api.admin).await.body["mode"],
        "recommend"
    );
}
