//! An AWS account moves from one tenant to another. Tenant A links it, installs the agent on
//! its cluster, uploads a snapshot, puts the cluster to sleep with a hibernation schedule and
//! schedules runs; then A unlinks the account and tenant B links it. Through the HTTP API and
//! with the real scheduler, nothing A set up may act on or read B's cluster, and B starts clean.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use spotwise_core::action::{ActionRecord, ActionStatus};
use spotwise_core::messages::DiscoverAccount;
use spotwise_core::{ClusterId, TenantId};
use spotwise_flow::{ACCOUNT, AGENT_ROLE, Api, ApiServer, PROD, REGION, env};
use spotwise_store::{Query, keys};
use spotwise_testkit::{LocalStack, fixture};
use time::OffsetDateTime;

async fn discover(stack: &LocalStack, sdk: &aws_config::SdkConfig, tenant: &TenantId) {
    let deps = discovery::Deps::new(
        sdk,
        &discovery::Config::from_env(&env(stack, "DiscoveryFunction", &[])).unwrap(),
    );
    discovery::discover_account(
        &deps,
        &DiscoverAccount {
            tenant_id: tenant.clone(),
            account_id: ACCOUNT.into(),
            run_id: format!("relink-{tenant}"),
            scheduled: None,
        },
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
}

async fn status(api: &Api, method: Method, path: &str, body: Option<Value>) -> StatusCode {
    api.send(method, path, body).await.unwrap().0
}

fn string(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {value}"))
        .to_owned()
}

async fn messages_on(sqs: &aws_sdk_sqs::Client, queue: &str) -> usize {
    sqs.receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages()
        .len()
}

#[tokio::test]
async fn a_relinked_account_belongs_to_its_new_tenant_alone() {
    let stack = LocalStack::start();
    let sdk = stack.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let server = ApiServer::start(&stack, &sdk).await.unwrap();
    let (tenant_a, tenant_b) = (
        TenantId::new("tenant-a").unwrap(),
        TenantId::new("tenant-b").unwrap(),
    );
    let a = server.tenant(&tenant_a, "A").await.unwrap();
    let b = server.tenant(&tenant_b, "B").await.unwrap();
    let scheduler = scheduler::Deps::new(
        &sdk,
        &scheduler::Config::from_env(&env(&stack, "SchedulerFunction", &[])).unwrap(),
    );
    let cluster = ClusterId::new(format!("{ACCOUNT}.{REGION}.prod")).unwrap();
    let snapshot = spotwise_core::snapshot::parse_list(
        fixture("events/optimizer/kubectl-snapshot.json").as_bytes(),
    )
    .unwrap();

    // Tenant A: linked, agent installed, snapshot uploaded, a viewer, a scheduled run, and a
    // hibernation schedule that has the cluster asleep now.
    let customer = spotwise_flow::link_account(&a, &sdk).await.unwrap();
    spotwise_flow::create_cluster(&customer, "prod", PROD)
        .await
        .unwrap();
    discover(&stack, &sdk, &tenant_a).await;
    let agent_path = format!("/v1/clusters/{cluster}/agent");
    let installed_a = a
        .post(&agent_path, json!({"agent_role_arn": AGENT_ROLE}))
        .await
        .unwrap();
    let agent_a = server.client(string(&installed_a, "agent_key"));
    let queue_a = string(&installed_a, "queue_url");
    agent_a.upload_snapshot(&snapshot).await.unwrap();
    let viewer_a = server.client(string(
        &a.post("/v1/keys", json!({"name": "dashboards", "role": "viewer"}))
            .await
            .unwrap(),
        "secret",
    ));
    let detail = format!("/v1/clusters/{cluster}");
    let seen = viewer_a.get(&detail).await.unwrap();
    assert!(seen["snapshot"].is_object(), "A sees its snapshot: {seen}");
    a.post(
        "/v1/schedules",
        json!({"cluster_id": cluster.as_str(), "name": "nightly", "kind": "optimize", "cron": "0 2 * * *"}),
    )
    .await
    .unwrap();
    let asleep = json!({
        "enabled": true,
        "time_zone": "UTC",
        "awake": vec!["0".repeat(24); 7],
        "scale_node_groups": false,
        "scale_workloads": true,
        "cordon_nodes": true,
    });
    a.put(&format!("{detail}/hibernation"), asleep.clone())
        .await
        .unwrap();
    let slept = scheduler::tick(&scheduler, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        slept.hibernation.slept,
        std::slice::from_ref(&cluster),
        "{slept:?}"
    );
    let queued_for_a = a.get("/v1/actions").await.unwrap()["items"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        queued_for_a > 0,
        "hibernation queued cordons and scales for A's agent"
    );

    // A unlinks, leaving its cluster asleep; B links the same account and discovers the same
    // cluster.
    // The cluster is asleep: unlinking would leave nothing to wake it, so A must say so.
    let unlink = format!("/v1/accounts/{ACCOUNT}");
    let (refused, body) = a.send(Method::DELETE, &unlink, None).await.unwrap();
    assert_eq!(refused, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "asleep");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(cluster.as_str())
    );
    assert_eq!(
        status(&a, Method::DELETE, &format!("{unlink}?force=true"), None).await,
        StatusCode::NO_CONTENT
    );
    spotwise_flow::link_account(&b, &sdk).await.unwrap();
    discover(&stack, &sdk, &tenant_b).await;

    // B installs its own agent: no 409 that would reveal A's, and a queue of its own.
    let (installed, body) = b
        .send(
            Method::POST,
            &agent_path,
            Some(json!({"agent_role_arn": AGENT_ROLE})),
        )
        .await
        .unwrap();
    assert_eq!(installed, StatusCode::CREATED, "{body}");
    let queue_b = string(&body, "queue_url");
    let secret_b = string(&body, "cluster_secret");
    assert_ne!(queue_b, queue_a);
    let agent_b = server.client(string(&body, "agent_key"));

    // A's agent key is revoked: it uploads nothing B would see, and reads no action.
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/agent/snapshot-uploads",
            Some(json!({"sha256": "0".repeat(64), "size": 10})),
        ),
        (
            Method::POST,
            "/v1/agent/heartbeat",
            Some(json!({"agent_version": "0.1.0", "dry_run": false})),
        ),
    ] {
        assert_eq!(
            status(&agent_a, method, path, body).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    // A's viewer and admin no longer reach the cluster: not its nodes, not a plan to approve,
    // not its agent to rotate (which would replace B's secret).
    for path in [
        detail.clone(),
        format!("{detail}/pod-history"),
        format!("{detail}/hibernation"),
    ] {
        assert_eq!(
            status(&viewer_a, Method::GET, &path, None).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let approve = format!("{detail}/recommendations/1/approve");
    assert_eq!(
        status(&a, Method::POST, &approve, Some(json!({}))).await,
        StatusCode::NOT_FOUND
    );
    let rotate = json!({"agent_role_arn": AGENT_ROLE, "rotate": true});
    assert_eq!(
        status(&a, Method::POST, &agent_path, Some(rotate)).await,
        StatusCode::NOT_FOUND
    );
    let channel = spotwise_store::actions::channel(
        &server.state().store,
        &server.state().vault,
        &tenant_b,
        &cluster,
    )
    .await
    .unwrap()
    .expect("B's agent channel");
    assert_eq!(
        channel
            .secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        secret_b,
        "B's secret stands"
    );
    assert_eq!(a.get("/v1/clusters").await.unwrap()["items"], json!([]));
    assert_eq!(a.get("/v1/schedules").await.unwrap()["items"], json!([]));

    // Everything A had in flight is stopped: its queue is gone and its actions are cancelled.
    assert!(
        sqs.get_queue_attributes()
            .queue_url(&queue_a)
            .send()
            .await
            .is_err(),
        "A's agent queue is deleted"
    );
    let a_actions = server
        .state()
        .store
        .query_all::<ActionRecord>(
            &Query::partition(keys::tenant_partition(&tenant_a)).prefix(keys::prefix::ACTION),
        )
        .await
        .unwrap();
    assert_eq!(a_actions.len(), queued_for_a);
    assert!(
        a_actions
            .iter()
            .all(|a| a.body.status == ActionStatus::Cancelled),
        "{:?}",
        a_actions.iter().map(|a| a.body.status).collect::<Vec<_>>()
    );

    // The real scheduler, at A's sleeping hours: nothing reaches B's agent.
    let later = scheduler::tick(
        &scheduler,
        OffsetDateTime::now_utc() + time::Duration::hours(1),
    )
    .await
    .unwrap();
    assert!(
        later.hibernation.slept.is_empty() && later.hibernation.woke.is_empty(),
        "{later:?}"
    );
    assert_eq!(messages_on(&sqs, &queue_b).await, 0, "nothing on B's queue");
    assert_eq!(b.get("/v1/actions").await.unwrap()["items"], json!([]));

    // B sees none of A's data: no snapshot, events, pod history, schedules or hibernation.
    let fresh = b.get(&detail).await.unwrap();
    assert!(
        fresh["snapshot"].is_null() && fresh["agent"].is_null(),
        "{fresh}"
    );
    assert_eq!(fresh["events"], json!([]));
    assert_eq!(
        b.get(&format!("{detail}/pod-history")).await.unwrap()["items"],
        json!([])
    );
    assert_eq!(b.get("/v1/schedules").await.unwrap()["items"], json!([]));
    let hibernation = b.get(&format!("{detail}/hibernation")).await.unwrap();
    assert_eq!(hibernation["version"], 0, "nothing stored: {hibernation}");
    assert!(hibernation["asleep"].is_null() && hibernation["schedule"]["enabled"] == false);

    // B's own agent works, and A's viewer still sees nothing of it.
    agent_b.upload_snapshot(&snapshot).await.unwrap();
    assert!(b.get(&detail).await.unwrap()["snapshot"].is_object());
    assert_eq!(
        status(&viewer_a, Method::GET, &detail, None).await,
        StatusCode::NOT_FOUND
    );
}
