use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
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
    let item = Item::new(keys::node(&node.tenant_id, &node.cluster_id, name), node)
        .with_gsi1(keys::instance_index(instance_id));
    deps.store.put(&item, PutCondition::Always).await.unwrap();
}

fn eventbridge(name: &str) -> String {
    fixture(&format!("events/eventbridge/{name}"))
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

async fn stat(env: &LocalHandler, counter: &str) -> i64 {
    let item = env
        .deps
        .store
        .get::<HashMap<String, serde_json::Value>>(&keys::daily_stats(
            "interruption",
            OffsetDateTime::now_utc(),
        ))
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
    assert_eq!(stat(&env, "duplicate_events").await, 4);
    assert_eq!(stat(&env, "ignored").await, 2);
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
    assert_eq!(stat(&env, "unknown_instances").await, 1);
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

#[test]
fn sqs_samples_carry_the_eventbridge_samples_verbatim() {
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
