use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use spotwise_core::TenantId;
use spotwise_core::domain::{CapacityType, Resources};
use spotwise_testkit::{LocalStack, fixture, records};

use super::*;

const SECRET: &[u8] = b"c1-agent-secret";
const SPOT_INSTANCE: &str = "i-0b662ef9931388ba0";

/// The handler wired to a fresh local stack, with one cluster's agent queue.
struct LocalHandler {
    stack: LocalStack,
    deps: Deps,
    agent_queue: String,
}

async fn setup() -> LocalHandler {
    let stack = LocalStack::start();
    let config =
        Config::from_env(&Env::from_map(stack.function_env("InterruptionFunction"))).unwrap();
    let sdk = stack.sdk_config().await;
    let deps = Deps::new(&sdk, &config);
    let agent_queue = deps
        .sqs
        .create_queue()
        .queue_name("spotwise-agent-c1.fifo")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let tenant = TenantId::new("t1").unwrap();
    let cluster_id = ClusterId::new("c1").unwrap();
    let cluster = records::cluster(&tenant, &cluster_id, Some(agent_queue.clone()));
    deps.store
        .put(
            &Item::new(keys::cluster(&tenant, &cluster_id), cluster),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    deps.store
        .put(
            &spotwise_store::actions::secret_item(&deps.vault, &tenant, &cluster_id, SECRET)
                .await
                .unwrap(),
            PutCondition::Always,
        )
        .await
        .unwrap();
    for (instance, name, zone_id) in [
        (SPOT_INSTANCE, "ip-10-0-1-17.ec2.internal", Some("use1-az2")),
        ("i-abcd1111", "ip-10-0-2-9.ec2.internal", Some("use1-az4")),
        ("i-12345678", "ip-10-0-3-3.ec2.internal", None),
        (
            "i-0633ac2b0d9769723",
            "ip-10-0-4-4.ec2.internal",
            Some("use1-az6"),
        ),
    ] {
        index_node(&deps, "c1", instance, name, zone_id).await;
    }
    LocalHandler {
        stack,
        deps,
        agent_queue,
    }
}

async fn index_node(
    deps: &Deps,
    cluster: &str,
    instance_id: &str,
    name: &str,
    zone_id: Option<&str>,
) {
    let node = Node {
        tenant_id: TenantId::new("t1").unwrap(),
        cluster_id: ClusterId::new(cluster).unwrap(),
        name: name.into(),
        instance_id: Some(instance_id.into()),
        instance_type: "m5.large".into(),
        zone: "us-east-1b".into(),
        zone_id: zone_id.map(str::to_owned),
        capacity_type: CapacityType::Spot,
        allocatable: Resources {
            cpu_m: 1930,
            mem_mib: 7200,
            pods: 29,
            gpus: 0,
        },
        labels: Default::default(),
        taints: vec![],
        unschedulable: false,
        departed_at: None,
    };
    let location = Item::new(
        keys::instance(instance_id),
        spotwise_core::domain::InstanceLocation::of(&node),
    );
    let item = Item::new(keys::node(&node.tenant_id, &node.cluster_id, name), node);
    deps.store.put(&item, PutCondition::Always).await.unwrap();
    deps.store
        .put(&location, PutCondition::Always)
        .await
        .unwrap();
}

/// The account the test cluster runs in (`records::cluster`).
const ACCOUNT: &str = "111122223333";

/// A published sample as the cluster's account forwards it: with its real account id.
fn eventbridge(name: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&fixture(&format!("events/eventbridge/{name}"))).unwrap();
    v["account"] = json!(ACCOUNT);
    v.to_string()
}

/// A sample with fields replaced (JSON pointer -> value).
fn variant(name: &str, changes: &[(&str, serde_json::Value)]) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&eventbridge(name)).unwrap();
    for (pointer, value) in changes {
        *v.pointer_mut(pointer).unwrap() = value.clone();
    }
    v.to_string()
}

/// Drains the agent's FIFO queue, returning every action on it.
async fn agent_actions(env: &LocalHandler) -> Vec<AgentAction> {
    env.stack.drain(&env.agent_queue).await
}

/// The handler's counter on the day of `at` (the day its `now` fell on when it counted).
async fn stat(env: &LocalHandler, counter: &str, at: OffsetDateTime) -> i64 {
    let item = env
        .deps
        .store
        .get::<HashMap<String, serde_json::Value>>(&keys::daily_stats("interruption", at))
        .await
        .unwrap();
    item.and_then(|i| i.body.get(counter).and_then(|v| v.as_i64()))
        .unwrap_or(0)
}

fn issued(outcome: &Outcome) -> Vec<(ActionKind, ActionStatus)> {
    match outcome {
        Outcome::Handled(list) => list
            .iter()
            .filter_map(|(_, o)| match o {
                InstanceOutcome::Issued { kind, status, .. } => Some((*kind, *status)),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

#[tokio::test]
async fn spot_warning_queues_one_signed_drain_with_a_live_deadline() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    let outcome = handle_body(
        &env.deps,
        &eventbridge("spot-interruption-warning.json"),
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        issued(&outcome),
        [(ActionKind::Drain, ActionStatus::Queued)]
    );

    let actions = agent_actions(&env).await;
    assert_eq!(actions.len(), 1);
    let action = &actions[0];
    // The published sample is dated 1970: the deadline is a fresh two minutes, not the past.
    assert_eq!(
        action.verify(&ClusterId::new("c1").unwrap(), SECRET, now),
        Ok(())
    );
    assert_eq!(action.not_after, now + interruption::INTERRUPTION_NOTICE);
    let ActionSpec::Drain { node, taint, .. } = &action.spec else {
        panic!("{:?}", action.spec);
    };
    assert_eq!(node, "ip-10-0-1-17.ec2.internal");
    assert_eq!(
        taint.as_ref().map(|t| t.key.as_str()),
        Some(INTERRUPTION_TAINT)
    );

    // Recorded, counted on its pool (by zone id), pool cooled down, tenant notified.
    let records = env
        .deps
        .store
        .query_all::<ActionRecord>(&Query::gsi1(keys::node_actions_partition(
            &TenantId::new("t1").unwrap(),
            &action.cluster_id,
            "ip-10-0-1-17.ec2.internal",
        )))
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].body.status, ActionStatus::Queued);
    let pool = PoolKey {
        region: "us-east-1".into(),
        zone: "use1-az2".into(),
        instance_type: "m5.large".into(),
    };
    let counter = env
        .deps
        .store
        .get::<HashMap<String, serde_json::Value>>(&keys::pool_interruptions(&pool, now))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counter.body["interruptions"], 1);
    assert!(
        env.deps
            .store
            .get::<serde_json::Value>(&keys::pool_cooldown(&pool))
            .await
            .unwrap()
            .is_some()
    );
    let notes: Vec<Notification> = env
        .stack
        .drain(env.stack.resource("NotificationsQueue"))
        .await;
    let note = &notes[0];
    assert_eq!(
        (note.event_type.as_str(), note.severity),
        ("interruption", Severity::Warning)
    );
}

#[tokio::test]
async fn every_sample_and_variant_gets_the_right_response() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    let handle = |body: String| {
        let deps = &env.deps;
        async move { handle_body(deps, &body, now).await.unwrap() }
    };

    // Rebalance: default policy cordons.
    assert_eq!(
        issued(&handle(eventbridge("rebalance-recommendation.json")).await),
        [(ActionKind::Cordon, ActionStatus::Queued)]
    );
    // Health scheduled change (RFC 1123 start in 2016, non-UUID id): drain now.
    assert_eq!(
        issued(&handle(eventbridge("scheduled-change.json")).await),
        [(ActionKind::Drain, ActionStatus::Queued)]
    );
    // ASG hook: drain that carries what completing the lifecycle action needs.
    assert_eq!(
        issued(&handle(eventbridge("asg-lifecycle-termination.json")).await),
        [(ActionKind::Drain, ActionStatus::Queued)]
    );
    // State change to pending: ignored.
    assert!(
        matches!(handle(eventbridge("instance-state-change.json")).await, Outcome::Ignored(r) if r.contains("pending"))
    );
    // Capacity-reservation interruption on the rebalanced node: drain (a cordon is not a drain).
    let cr = variant(
        "spot-interruption-warning.json",
        &[
            ("/id", json!("cr-1")),
            (
                "/detail-type",
                json!("EC2 Capacity Reservation Instance Interruption Warning"),
            ),
        ],
    );
    assert_eq!(
        issued(&handle(cr).await),
        [(ActionKind::Drain, ActionStatus::Queued)]
    );

    let actions = agent_actions(&env).await;
    let asg = actions
        .iter()
        .find(|a| a.spec.node() == Some("ip-10-0-4-4.ec2.internal"))
        .unwrap();
    let ActionSpec::Drain {
        lifecycle_hook: Some(hook),
        ..
    } = &asg.spec
    else {
        panic!("{:?}", asg.spec);
    };
    assert_eq!(hook.hook_name, "cluster-termination-handler");
    assert_eq!(hook.token, "0befcbdb-6ecd-498a-9ff7-ae9b54447cd6");
    assert_eq!(actions.len(), 4);

    // The instance stops: its node is marked departed and its open actions closed.
    let stopping = variant(
        "instance-state-change.json",
        &[
            ("/detail/state", json!("stopping")),
            ("/detail/instance-id", json!(SPOT_INSTANCE)),
        ],
    );
    match handle(stopping).await {
        Outcome::Handled(list) => {
            assert_eq!(list[0].1, InstanceOutcome::Departed { closed_actions: 2 })
        }
        other => panic!("{other:?}"),
    }
    let node = env
        .deps
        .store
        .get::<Node>(&keys::node(
            &TenantId::new("t1").unwrap(),
            &ClusterId::new("c1").unwrap(),
            "ip-10-0-1-17.ec2.internal",
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(node.body.departed_at.is_some());
}

#[tokio::test]
async fn every_event_delivered_twice_in_random_order_yields_one_drain_per_node() {
    let env = setup().await;
    // Three different events about the spot node, two about others.
    let mut bodies = vec![
        eventbridge("spot-interruption-warning.json"),
        variant(
            "scheduled-change.json",
            &[(
                "/detail/affectedEntities",
                json!([{"entityValue": SPOT_INSTANCE}, {"entityValue": "i-12345678"}]),
            )],
        ),
        variant(
            "asg-lifecycle-termination.json",
            &[
                ("/id", json!("asg-2")),
                ("/detail/EC2InstanceId", json!(SPOT_INSTANCE)),
            ],
        ),
        eventbridge("asg-lifecycle-termination.json"),
        eventbridge("instance-state-change.json"),
    ];
    bodies.extend(bodies.clone());
    bodies.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));

    // One message per invocation: moto, unlike DynamoDB, does not serialise concurrent
    // conditional writes, so concurrent duplicates would test the emulator, not this code.
    for (i, body) in bodies.into_iter().enumerate() {
        let mut message = SqsMessage::default();
        message.message_id = Some(format!("m{i}"));
        message.body = Some(body);
        let mut event = SqsEvent::default();
        event.records.push(message);
        let response = handle_batch(&env.deps, event).await.unwrap();
        assert!(response.batch_item_failures.is_empty());
    }

    let actions = agent_actions(&env).await;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for a in &actions {
        assert_eq!(a.kind(), ActionKind::Drain);
        if let Some(name) = a.spec.node() {
            *per_node.entry(name.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(
        per_node.values().all(|&n| n == 1),
        "exactly one drain per node: {per_node:?}"
    );
    // Four distinct signals each arrived twice; the pending state change is ignored both times.
    assert_eq!(
        stat(&env, "duplicate_events", OffsetDateTime::now_utc()).await,
        4
    );
    assert_eq!(stat(&env, "ignored", OffsetDateTime::now_utc()).await, 2);
}

#[tokio::test]
async fn unknown_instances_are_counted_and_dropped() {
    let env = setup().await;
    let body = variant(
        "spot-interruption-warning.json",
        &[("/detail/instance-id", json!("i-0123456789abcdef0"))],
    );
    let outcome = handle_body(&env.deps, &body, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Handled(vec![(
            "i-0123456789abcdef0".into(),
            InstanceOutcome::UnknownInstance
        )])
    );
    assert_eq!(
        stat(&env, "unknown_instances", OffsetDateTime::now_utc()).await,
        1
    );
    assert!(agent_actions(&env).await.is_empty());
}

#[tokio::test]
async fn malformed_messages_fail_alone_and_unrelated_ones_are_acknowledged() {
    let env = setup().await;
    let mut event: SqsEvent = serde_json::from_str(&fixture(
        "events/interruption/sqs-spot-interruption-warning.json",
    ))
    .unwrap();
    for (id, body) in [
        ("not-json", "{\"detail-type\": "),
        (
            "no-instance",
            &variant(
                "spot-interruption-warning.json",
                &[("/id", json!("x")), ("/detail", json!({}))],
            )[..],
        ),
        (
            "unrelated",
            &variant(
                "spot-interruption-warning.json",
                &[("/detail-type", json!("EC2 AMI State Change"))],
            )[..],
        ),
    ] {
        let mut m = event.records[0].clone();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        event.records.push(m);
    }
    let response = handle_batch(&env.deps, event).await.unwrap();
    let mut failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    failed.sort_unstable();
    assert_eq!(failed, ["no-instance", "not-json"]);
    assert_eq!(
        agent_actions(&env).await.len(),
        1,
        "the valid sample in the batch was still handled"
    );
}

#[tokio::test]
async fn cluster_without_agent_records_an_undeliverable_action() {
    let env = setup().await;
    let (tenant, cluster) = (
        TenantId::new("t1").unwrap(),
        ClusterId::new("c-noagent").unwrap(),
    );
    let record = records::cluster(&tenant, &cluster, None);
    env.deps
        .store
        .put(
            &Item::new(keys::cluster(&tenant, &cluster), record),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    index_node(
        &env.deps,
        "c-noagent",
        "i-0feedfeedfeedfeed",
        "ip-10-9-9-9.ec2.internal",
        Some("use1-az1"),
    )
    .await;
    let body = variant(
        "spot-interruption-warning.json",
        &[
            ("/id", json!("e-noagent")),
            ("/detail/instance-id", json!("i-0feedfeedfeedfeed")),
        ],
    );
    let outcome = handle_body(&env.deps, &body, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        issued(&outcome),
        [(ActionKind::Drain, ActionStatus::Undeliverable)]
    );
}

#[tokio::test]
async fn rebalance_follows_the_cluster_policy() {
    let env = setup().await;
    let tenant = TenantId::new("t1").unwrap();
    let cluster = ClusterId::new("c1").unwrap();
    let policy = Policy {
        rebalance: RebalanceResponse::Notify,
        ..Policy::default()
    };
    env.deps
        .store
        .put(
            &Item::new(keys::policy(&tenant, &cluster), policy),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let outcome = handle_body(
        &env.deps,
        &eventbridge("rebalance-recommendation.json"),
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        Outcome::Handled(vec![(SPOT_INSTANCE.into(), InstanceOutcome::NotifiedOnly)])
    );
    assert!(agent_actions(&env).await.is_empty());

    let drain = Policy {
        rebalance: RebalanceResponse::Drain,
        ..Policy::default()
    };
    env.deps
        .store
        .put(
            &Item::new(keys::policy(&tenant, &cluster), drain),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let body = variant("rebalance-recommendation.json", &[("/id", json!("rb-2"))]);
    assert_eq!(
        issued(
            &handle_body(&env.deps, &body, OffsetDateTime::now_utc())
                .await
                .unwrap()
        ),
        [(ActionKind::Drain, ActionStatus::Queued)]
    );
}

async fn records_of(env: &LocalHandler, node: &str) -> Vec<ActionRecord> {
    env.deps
        .store
        .query_all::<ActionRecord>(&Query::gsi1(keys::node_actions_partition(
            &TenantId::new("t1").unwrap(),
            &ClusterId::new("c1").unwrap(),
            node,
        )))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.body)
        .collect()
}

async fn pool_count(env: &LocalHandler, zone_id: &str, day: OffsetDateTime) -> i64 {
    let pool = PoolKey {
        region: "us-east-1".into(),
        zone: zone_id.into(),
        instance_type: "m5.large".into(),
    };
    env.deps
        .store
        .get::<HashMap<String, serde_json::Value>>(&keys::pool_interruptions(&pool, day))
        .await
        .unwrap()
        .and_then(|i| i.body.get("interruptions").and_then(|v| v.as_i64()))
        .unwrap_or(0)
}

fn one(outcome: Outcome) -> InstanceOutcome {
    match outcome {
        Outcome::Handled(mut list) if list.len() == 1 => list.remove(0).1,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_event_from_an_account_that_does_not_run_the_instance_is_counted_and_dropped() {
    let env = setup().await;
    // Another tenant's (or an unlinked) account names an instance of this tenant's cluster.
    let body = variant(
        "spot-interruption-warning.json",
        &[("/account", json!("444455556666"))],
    );
    let outcome = handle_body(&env.deps, &body, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(one(outcome), InstanceOutcome::ForeignAccount);
    assert_eq!(
        stat(&env, "foreign_account_events", OffsetDateTime::now_utc()).await,
        1
    );
    assert!(agent_actions(&env).await.is_empty());
    assert!(
        records_of(&env, "ip-10-0-1-17.ec2.internal")
            .await
            .is_empty()
    );
    // The instance's own account is still heard afterwards.
    let own = variant("spot-interruption-warning.json", &[("/id", json!("own"))]);
    let outcome = handle_body(&env.deps, &own, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        issued(&outcome),
        [(ActionKind::Drain, ActionStatus::Queued)]
    );
}

#[tokio::test]
async fn a_warning_dated_in_the_future_or_hours_back_gets_two_minutes_from_receipt() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    for (id, instance, at) in [
        ("future", SPOT_INSTANCE, now + time::Duration::hours(3)),
        ("past", "i-abcd1111", now - time::Duration::hours(5)),
    ] {
        let body = variant(
            "spot-interruption-warning.json",
            &[
                ("/id", json!(id)),
                ("/time", json!(rfc3339(at))),
                ("/detail/instance-id", json!(instance)),
            ],
        );
        handle_body(&env.deps, &body, now).await.unwrap();
    }
    let actions = agent_actions(&env).await;
    assert_eq!(actions.len(), 2);
    for action in actions {
        assert_eq!(action.not_after, now + interruption::INTERRUPTION_NOTICE);
    }
}

fn health_change(id: &str, status: &str, start: OffsetDateTime) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&eventbridge("scheduled-change.json")).unwrap();
    v["id"] = json!(id);
    v["detail"]["statusCode"] = json!(status);
    v["detail"]["eventArn"] =
        json!("arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/1");
    v["detail"]["startTime"] = json!(rfc3339(start));
    v["detail"]["affectedEntities"] = json!([{"entityValue": SPOT_INSTANCE}]);
    v.to_string()
}

#[tokio::test]
async fn health_upcoming_drains_by_its_start_and_closed_withdraws_the_queued_drain() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    let start = now + time::Duration::minutes(20);
    let upcoming = handle_body(&env.deps, &health_change("h1", "upcoming", start), now)
        .await
        .unwrap();
    assert_eq!(
        issued(&upcoming),
        [(ActionKind::Drain, ActionStatus::Queued)]
    );
    let drains = agent_actions(&env).await;
    assert_eq!(drains[0].not_after, start, "the start time, under the cap");

    let closed = handle_body(&env.deps, &health_change("h2", "closed", start), now)
        .await
        .unwrap();
    assert_eq!(one(closed), InstanceOutcome::Withdrawn { cancelled: 1 });
    let records = records_of(&env, "ip-10-0-1-17.ec2.internal").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, ActionStatus::Cancelled);
    assert!(
        records[0]
            .status_reason
            .as_deref()
            .unwrap_or_default()
            .contains("closed")
    );
    // The agent asks before it runs a drain, and skips a cancelled one.

    // A closed change with nothing of its own in flight drains nothing.
    let again = handle_body(&env.deps, &health_change("h3", "closed", start), now)
        .await
        .unwrap();
    assert_eq!(one(again), InstanceOutcome::NothingToWithdraw);
    assert!(agent_actions(&env).await.is_empty());
}

#[tokio::test]
async fn health_closed_leaves_the_drain_of_a_node_that_is_really_going() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    let start = now + time::Duration::minutes(20);
    handle_body(&env.deps, &health_change("h1", "open", start), now)
        .await
        .unwrap();
    let spot = variant("spot-interruption-warning.json", &[("/id", json!("s1"))]);
    let merged = handle_body(&env.deps, &spot, now).await.unwrap();
    assert!(matches!(one(merged), InstanceOutcome::Amended { .. }));
    let closed = handle_body(&env.deps, &health_change("h2", "closed", start), now)
        .await
        .unwrap();
    assert_eq!(one(closed), InstanceOutcome::NothingToWithdraw);
    let records = records_of(&env, "ip-10-0-1-17.ec2.internal").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, ActionStatus::Queued);
}

#[tokio::test]
async fn terminated_before_the_warning_issues_nothing_and_the_pool_counts_once() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    // A standard queue delivers the termination first, the warning two hours late.
    let terminated = variant(
        "instance-state-change.json",
        &[
            ("/id", json!("t1")),
            ("/time", json!(rfc3339(now - time::Duration::minutes(1)))),
            ("/detail/state", json!("terminated")),
            ("/detail/instance-id", json!(SPOT_INSTANCE)),
        ],
    );
    assert_eq!(
        one(handle_body(&env.deps, &terminated, now).await.unwrap()),
        InstanceOutcome::Departed { closed_actions: 0 }
    );
    let late_at = now - time::Duration::minutes(3);
    let later = now + time::Duration::hours(2);
    for id in ["late-1", "late-2"] {
        let late = variant(
            "spot-interruption-warning.json",
            &[("/id", json!(id)), ("/time", json!(rfc3339(late_at)))],
        );
        assert_eq!(
            one(handle_body(&env.deps, &late, later).await.unwrap()),
            InstanceOutcome::AlreadyDeparted
        );
    }
    assert!(agent_actions(&env).await.is_empty());
    assert_eq!(
        pool_count(&env, "use1-az2", late_at).await,
        1,
        "counted once, on its day"
    );
    // Counted on the day they were handled (after midnight when the test runs late).
    assert_eq!(stat(&env, "late_signals", later).await, 2);
}

/// A spot warning, an AWS Health change and an Auto Scaling hook for one instance, delivered
/// in every order, one at a time or in one batch.
#[tokio::test]
async fn several_signals_for_one_instance_make_one_drain_with_the_hook_and_the_earliest_deadline() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    let orders: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (round, order) in orders.iter().enumerate() {
        for in_one_batch in [false, true] {
            let instance = format!("i-0{:016x}", round * 2 + usize::from(in_one_batch) + 1);
            let node = format!("ip-10-7-{round}-{}.ec2.internal", u8::from(in_one_batch));
            index_node(&env.deps, "c1", &instance, &node, Some("use1-az3")).await;
            let tag = format!("{round}-{in_one_batch}");
            let signals = [
                variant(
                    "spot-interruption-warning.json",
                    &[
                        ("/id", json!(format!("spot-{tag}"))),
                        ("/time", json!(rfc3339(now))),
                        ("/detail/instance-id", json!(instance)),
                    ],
                ),
                {
                    let mut v: serde_json::Value = serde_json::from_str(&health_change(
                        &format!("health-{tag}"),
                        "open",
                        now + time::Duration::minutes(30),
                    ))
                    .unwrap();
                    v["detail"]["affectedEntities"] = json!([{"entityValue": instance}]);
                    v.to_string()
                },
                variant(
                    "asg-lifecycle-termination.json",
                    &[
                        ("/id", json!(format!("asg-{tag}"))),
                        ("/detail/EC2InstanceId", json!(instance)),
                    ],
                ),
            ];
            let mut event = SqsEvent::default();
            for (i, &which) in order.iter().enumerate() {
                let mut message = SqsMessage::default();
                message.message_id = Some(format!("m-{tag}-{i}"));
                message.body = Some(signals[which].clone());
                event.records.push(message);
            }
            if in_one_batch {
                let response = handle_batch(&env.deps, event).await.unwrap();
                assert!(response.batch_item_failures.is_empty());
            } else {
                for message in event.records {
                    let mut single = SqsEvent::default();
                    single.records.push(message);
                    let response = handle_batch(&env.deps, single).await.unwrap();
                    assert!(response.batch_item_failures.is_empty());
                }
            }
            let actions = agent_actions(&env).await;
            assert_eq!(
                actions.len(),
                1,
                "order {order:?}, one batch {in_one_batch}: {actions:?}"
            );
            let records = records_of(&env, &node).await;
            assert_eq!(records.len(), 1);
            let mut terms = DrainTerms::of(&records[0].action);
            if let Some(amendment) = &records[0].amendment {
                terms.amend(amendment);
            }
            assert_eq!(
                terms.not_after,
                now + interruption::INTERRUPTION_NOTICE,
                "the spot warning's deadline, whichever came first ({order:?})"
            );
            let hook = terms
                .lifecycle_hook
                .unwrap_or_else(|| panic!("no hook ({order:?})"));
            assert_eq!(
                (hook.token.as_str(), hook.instance_id.as_str()),
                ("0befcbdb-6ecd-498a-9ff7-ae9b54447cd6", instance.as_str())
            );
        }
    }
}

/// The agent finished the spot warning's drain before the instance's Auto Scaling hook came:
/// a finished action cannot be amended, so a second drain carries the hook to completion.
#[tokio::test]
async fn a_hook_after_the_drain_finished_gets_a_drain_of_its_own() {
    let env = setup().await;
    let now = OffsetDateTime::now_utc();
    let spot = variant(
        "spot-interruption-warning.json",
        &[("/time", json!(rfc3339(now)))],
    );
    let Outcome::Handled(first) = handle_body(&env.deps, &spot, now).await.unwrap() else {
        panic!("not handled");
    };
    let InstanceOutcome::Issued { action_id, .. } = &first[0].1 else {
        panic!("{first:?}");
    };
    let key = keys::action(&TenantId::new("t1").unwrap(), action_id);
    let mut record = env
        .deps
        .store
        .get::<ActionRecord>(&key)
        .await
        .unwrap()
        .unwrap();
    record.body.status = ActionStatus::Succeeded;
    env.deps.store.update_versioned(&record).await.unwrap();

    let hook = variant(
        "asg-lifecycle-termination.json",
        &[
            ("/id", json!("late-hook")),
            ("/detail/EC2InstanceId", json!(SPOT_INSTANCE)),
        ],
    );
    let second = one(handle_body(&env.deps, &hook, now).await.unwrap());
    assert!(
        matches!(
            second,
            InstanceOutcome::Issued {
                kind: ActionKind::Drain,
                ..
            }
        ),
        "{second:?}"
    );
    let actions = agent_actions(&env).await;
    assert_eq!(actions.len(), 2);
    let ActionSpec::Drain {
        lifecycle_hook: Some(hook),
        ..
    } = &actions[1].spec
    else {
        panic!("{:?}", actions[1].spec);
    };
    assert_eq!(hook.instance_id, SPOT_INSTANCE);
    assert_eq!(
        actions[1].not_after,
        now + interruption::INTERRUPTION_NOTICE,
        "still the warning's deadline"
    );
    assert_eq!(
        pool_count(&env, "use1-az2", now).await,
        1,
        "one interruption, counted once"
    );
}

#[tokio::test]
async fn an_instance_id_that_is_not_one_fails_the_record_with_the_field_named() {
    let env = setup().await;
    for (id, pointer, value, message) in [
        (
            "short",
            "/detail/instance-id",
            json!("i-aaa"),
            "detail.instance-id \"i-aaa\" is not an instance id",
        ),
        (
            "number",
            "/detail/instance-id",
            json!(42),
            "detail.instance-id must be a string, not a number",
        ),
    ] {
        let body = variant(
            "spot-interruption-warning.json",
            &[("/id", json!(id)), (pointer, value)],
        );
        let err = handle_body(&env.deps, &body, OffsetDateTime::now_utc())
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with(message), "{err}");
        assert_eq!(err.disposition(), Disposition::NonRetryable);
    }
    assert!(agent_actions(&env).await.is_empty());
}

/// What a customer's forwarding rule delivers, put on Spotwise's bus: the bus rules from
/// template.yaml (created on the emulator by the local stack) pass exactly the signals the
/// handler takes to the interruption queue, and the handler turns those into drains.
#[tokio::test]
async fn events_forwarded_to_the_bus_reach_the_handler_through_its_rules() {
    let env = setup().await;
    let events = aws_sdk_eventbridge::Client::new(&env.stack.sdk_config().await);
    let bus = env.stack.resource("InterruptionEventBus").to_owned();
    let forwarded = [
        ("spot-interruption-warning.json", vec![], true),
        ("asg-lifecycle-termination.json", vec![], true),
        ("scheduled-change.json", vec![], true),
        (
            "instance-state-change.json",
            vec![("/detail/state", json!("terminated"))],
            true,
        ),
        // Not for the handler: the rules keep them off the queue.
        ("instance-state-change.json", vec![], false),
        (
            "scheduled-change.json",
            vec![("/detail/service", json!("RDS"))],
            false,
        ),
        (
            "spot-interruption-warning.json",
            vec![("/detail-type", json!("EC2 AMI State Change"))],
            false,
        ),
    ];
    for (name, changes, _) in &forwarded {
        let event: serde_json::Value = serde_json::from_str(&variant(name, changes)).unwrap();
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&bus)
            .source(event["source"].as_str().unwrap())
            .detail_type(event["detail-type"].as_str().unwrap())
            .detail(event["detail"].to_string())
            .build();
        let put = events.put_events().entries(entry).send().await.unwrap();
        assert_eq!(put.failed_entry_count(), 0);
    }
    let queue = env.stack.resource("InterruptionQueue").to_owned();
    let delivered: Vec<serde_json::Value> = env.stack.drain(&queue).await;
    let expected = forwarded.iter().filter(|(_, _, passes)| *passes).count();
    assert_eq!(delivered.len(), expected, "{delivered:#?}");

    let mut batch = SqsEvent::default();
    for (i, mut body) in delivered.into_iter().enumerate() {
        // EventBridge stamps the source account on every event; the emulator leaves it out.
        body["account"] = json!(ACCOUNT);
        let mut message = SqsMessage::default();
        message.message_id = Some(format!("bus-{i}"));
        message.body = Some(body.to_string());
        batch.records.push(message);
    }
    let response = handle_batch(&env.deps, batch).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let drained: Vec<String> = agent_actions(&env)
        .await
        .iter()
        .filter(|a| a.kind() == ActionKind::Drain)
        .filter_map(|a| a.spec.node().map(str::to_owned))
        .collect();
    assert_eq!(
        drained.len(),
        3,
        "spot, ASG hook and Health nodes: {drained:?}"
    );
}

#[test]
fn sqs_samples_carry_the_eventbridge_samples_as_the_account_forwards_them() {
    for name in [
        "spot-interruption-warning.json",
        "rebalance-recommendation.json",
        "instance-state-change.json",
        "scheduled-change.json",
        "asg-lifecycle-termination.json",
    ] {
        let wrapped: SqsEvent =
            serde_json::from_str(&fixture(&format!("events/interruption/sqs-{name}"))).unwrap();
        let body: serde_json::Value =
            serde_json::from_str(wrapped.records[0].body.as_deref().unwrap()).unwrap();
        let raw: serde_json::Value = serde_json::from_str(&eventbridge(name)).unwrap();
        assert_eq!(body, raw, "{name}");
    }
}

#[test]
fn regions_from_zone_names() {
    assert_eq!(region_of_zone("us-east-1b"), "us-east-1");
    assert_eq!(region_of_zone("ap-southeast-2c"), "ap-southeast-2");
    assert_eq!(region_of_zone("us-west-2-lax-1a"), "us-west-2");
}

/// The queue wiring from template.yaml: a poison message is retried, then lands in the DLQ.
#[tokio::test]
async fn poison_message_ends_in_the_dlq_after_the_receive_limit() {
    let env = setup().await;
    let queue = env.stack.resource("InterruptionQueue").to_owned();
    let dlq = env.stack.resource("InterruptionDLQ").to_owned();
    env.deps
        .sqs
        .send_message()
        .queue_url(&queue)
        .message_body("{\"detail-type\": 42")
        .send()
        .await
        .unwrap();

    let mut receives = 0;
    for _ in 0..10 {
        let out = env
            .deps
            .sqs
            .receive_message()
            .queue_url(&queue)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        let Some(message) = out.messages.unwrap_or_default().into_iter().next() else {
            break;
        };
        receives += 1;
        let mut record = SqsMessage::default();
        record.message_id = message.message_id().map(str::to_owned);
        record.body = message.body().map(str::to_owned);
        let mut event = SqsEvent::default();
        event.records.push(record);
        let response = handle_batch(&env.deps, event).await.unwrap();
        assert_eq!(
            response.batch_item_failures.len(),
            1,
            "a poison message is never acknowledged"
        );
    }
    assert_eq!(receives, 3, "maxReceiveCount in template.yaml");
    let dead = env
        .deps
        .sqs
        .receive_message()
        .queue_url(&dlq)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("{\"detail-type\": 42"));
}
