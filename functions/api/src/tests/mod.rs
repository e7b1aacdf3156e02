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

mod accounts;
mod agent;
mod api_keys;
mod audit;
mod clusters;
mod costs;
mod health;
mod hibernation;
mod node_templates;
mod openapi;
mod recommendations;
mod requests;
mod rightsizing;
mod schedules;
mod status_page;
mod tenancy;
mod users;
mod webhooks;

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

    /// Uploads a snapshot as the agent does: an upload ticket, the PUT to the local S3, and the
    /// confirmation. Returns the confirmation, or the ticket when the snapshot is unchanged.
    async fn upload_snapshot(&self, agent: &str, snapshot: &Value) -> Reply {
        let json = serde_json::to_vec(snapshot).unwrap();
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, &json).unwrap();
        let gzip = gzip.finish().unwrap();
        let ticket = self
            .post(
                "/v1/agent/snapshot-uploads",
                agent,
                json!({"sha256": sha256, "size": gzip.len()}),
            )
            .await;
        if ticket.status != StatusCode::OK || ticket.body["status"] == "unchanged" {
            return ticket;
        }
        spotwise_testkit::upload::put_presigned(&ticket.body, gzip).await;
        self.confirm_upload(agent, ticket.body["upload_id"].as_str().unwrap())
            .await
    }

    async fn confirm_upload(&self, agent: &str, id: &str) -> Reply {
        self.send(
            Method::POST,
            &format!("/v1/agent/snapshot-uploads/{id}/confirm"),
            Some(agent),
            None,
            &[],
        )
        .await
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

/// The shipped snapshot of a small cluster (`events/optimizer/kubectl-snapshot.json`).
fn fixture_snapshot() -> spotwise_core::snapshot::Snapshot {
    spotwise_core::snapshot::parse_list(
        fixture("events/optimizer/kubectl-snapshot.json").as_bytes(),
    )
    .unwrap()
}

fn prod_cluster() -> ClusterId {
    ClusterId::new("111122223333.us-east-1.prod").unwrap()
}

impl Api {
    /// The audit log's actions, newest first, as the tenant's admin reads them.
    async fn audit_actions(&self) -> Vec<String> {
        let audit = self.get("/v1/audit", &self.admin).await;
        audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["action"].as_str().map(str::to_owned))
            .collect()
    }

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
        self.agent_key_by(&self.admin).await
    }

    /// An agent key for the prod cluster, created by `admin` in its tenant.
    async fn agent_key_by(&self, admin: &str) -> String {
        let created = self
            .post(
                "/v1/keys",
                admin,
                json!({"name": "agent", "role": "agent", "cluster_id": prod_cluster().to_string()}),
            )
            .await;
        created.body["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", created.body))
            .to_owned()
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
            amendment: None,
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
