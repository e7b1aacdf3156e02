//! Event-to-action latency against the local stack, over 1,000 spot warnings for 1,000 nodes:
//!
//! - handler: the message in hand to the signed action on the agent queue (event claim, index
//!   look-up, cluster, secret and signal-record reads, the record's write, the send; the action
//!   record, pool counter and notification follow concurrently and are included);
//! - end to end: PutEvents on the interruption bus, the bus rule to the interruption queue, a
//!   receive as Lambda's poller makes it, the handler, and the agent's receive of the action;
//! - each round trip of the critical path alone, to say what bounds the handler.
//!
//!     cargo bench -p interruption --bench local_stack

use std::future::Future;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use interruption::{Config, Deps, InstanceOutcome, Outcome, handle_batch, handle_body};
use spotwise_core::config::Env;
use spotwise_core::domain::{CapacityType, Cluster, InstanceLocation, Node, Resources};
use spotwise_core::{ClusterId, TenantId};
use spotwise_store::keys;
use spotwise_store::{Item, PutCondition};
use spotwise_testkit::LocalStack;
use time::OffsetDateTime;

const EVENTS: usize = 1_000;

#[tokio::main]
async fn main() {
    let stack = LocalStack::start();
    let config = Config::from_env(&Env::from_map(stack.function_env("InterruptionFunction")))
        .unwrap_or_else(|e| panic!("{e}"));
    let deps = Deps::new(&stack.sdk_config().await, &config);
    let tenant = TenantId::new("t-bench").unwrap_or_else(|e| panic!("{e}"));
    let cluster_id = ClusterId::new("c-bench").unwrap_or_else(|e| panic!("{e}"));
    let queue = deps
        .sqs
        .create_queue()
        .queue_name("spotwise-agent-c-bench.fifo")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .queue_url
        .unwrap_or_default();
    let cluster = Cluster {
        tenant_id: tenant.clone(),
        id: cluster_id.clone(),
        account_id: "111122223333".into(),
        region: "us-east-1".into(),
        name: "bench".into(),
        arn: "arn:aws:eks:us-east-1:111122223333:cluster/bench".into(),
        kubernetes_version: None,
        status: "ACTIVE".into(),
        agent_queue_url: Some(queue.clone()),
        vanished_at: None,
    };
    let put = |r: Result<(), spotwise_store::StoreError>| r.unwrap_or_else(|e| panic!("{e}"));
    put(deps
        .store
        .put(
            &Item::new(keys::cluster(&tenant, &cluster_id), cluster),
            PutCondition::Always,
        )
        .await);
    let secret = spotwise_store::actions::secret_item(&deps.vault, &tenant, &cluster_id, &[0; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    put(deps.store.put(&secret, PutCondition::Always).await);
    let nodes: Vec<Item<Node>> = (0..2 * EVENTS)
        .map(|i| {
            let name = format!("ip-10-1-{}-{}.ec2.internal", i / 250, i % 250);
            let instance = format!("i-{i:017x}");
            Item::new(
                keys::node(&tenant, &cluster_id, &name),
                Node {
                    tenant_id: tenant.clone(),
                    cluster_id: cluster_id.clone(),
                    name,
                    instance_id: Some(instance.clone()),
                    instance_type: "m5.large".into(),
                    zone: "us-east-1a".into(),
                    zone_id: Some("use1-az1".into()),
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
                },
            )
        })
        .collect();
    let locations: Vec<Item<InstanceLocation>> = nodes
        .iter()
        .filter_map(|n| {
            let instance = n.body.instance_id.as_deref()?;
            Some(Item::new(
                keys::instance(instance),
                InstanceLocation::of(&n.body),
            ))
        })
        .collect();
    deps.store
        .batch_put(&nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    deps.store
        .batch_put(&locations)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut template: serde_json::Value = serde_json::from_str(include_str!(
        "../../../events/eventbridge/spot-interruption-warning.json"
    ))
    .unwrap_or_default();
    template["account"] = serde_json::json!("111122223333");
    let event = |i: usize, round: &str| {
        let mut event = template.clone();
        event["id"] = serde_json::json!(format!("{round}-{i}"));
        event["detail"]["instance-id"] = serde_json::json!(format!("i-{i:017x}"));
        event
    };

    let mut handler_ms = Vec::with_capacity(EVENTS);
    let started = Instant::now();
    for i in 0..EVENTS {
        let body = event(i, "handler").to_string();
        let start = Instant::now();
        let outcome = handle_body(&deps, &body, OffsetDateTime::now_utc())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        handler_ms.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(
            matches!(&outcome, Outcome::Handled(list) if matches!(list[0].1, InstanceOutcome::Issued { .. })),
            "{outcome:?}"
        );
        // The agent takes each action off its queue, as a running agent does: the emulator's
        // FIFO send slows with the queue's depth, which a served queue never reaches.
        receive_one(&deps.sqs, &queue).await;
    }
    let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    report("handler: event -> action enqueued", &mut handler_ms);
    println!("  ({rate:.0} events/s sequential, the agent's receive included)");

    // End to end, for the second thousand nodes.
    let events = aws_sdk_eventbridge::Client::new(&stack.sdk_config().await);
    let bus = stack.resource("InterruptionEventBus").to_owned();
    let interruption_queue = stack.resource("InterruptionQueue").to_owned();
    let mut end_to_end_ms = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let mut forwarded = event(i, "bus");
        let instance = format!("i-{:017x}", EVENTS + i);
        forwarded["detail"]["instance-id"] = serde_json::json!(instance);
        let start = Instant::now();
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&bus)
            .source("aws.ec2")
            .detail_type("EC2 Spot Instance Interruption Warning")
            .detail(forwarded["detail"].to_string())
            .build();
        events
            .put_events()
            .entries(entry)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let received = receive_one(&deps.sqs, &interruption_queue).await;
        let mut body: serde_json::Value =
            serde_json::from_str(received.body().unwrap_or_default()).unwrap_or_default();
        // EventBridge stamps the source account; the emulator does not.
        body["account"] = serde_json::json!("111122223333");
        let mut message = SqsMessage::default();
        message.message_id = received.message_id().map(str::to_owned);
        message.body = Some(body.to_string());
        let mut batch = SqsEvent::default();
        batch.records.push(message);
        let response = handle_batch(&deps, batch)
            .await
            .unwrap_or_else(|e| match e {});
        assert!(response.batch_item_failures.is_empty());
        receive_one(&deps.sqs, &queue).await;
        end_to_end_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    report(
        "end to end: PutEvents -> bus rule -> queue -> handler -> agent receive",
        &mut end_to_end_ms,
    );

    // Each round trip of the handler's critical path, alone.
    let location = keys::instance("i-00000000000000001");
    report(
        "  GSI query (the instance look-up the location item replaced)",
        &mut timed(|| async {
            deps.store
                .query::<serde_json::Value>(
                    &spotwise_store::Query::gsi1("INSTANCE#i-00000000000000001").limit(1),
                )
                .await
                .map(|_| ())
        })
        .await,
    );
    report(
        "  GetItem (location, cluster, secret, signal record)",
        &mut timed(|| async {
            deps.store
                .get::<serde_json::Value>(&location)
                .await
                .map(|_| ())
        })
        .await,
    );
    let mut n = 0u64;
    report(
        "  conditional PutItem (claim, record)",
        &mut timed(|| {
            n += 1;
            let key = keys::idempotency("bench", &n.to_string());
            let store = &deps.store;
            async move {
                store
                    .claim(
                        &key,
                        std::time::Duration::from_secs(60),
                        OffsetDateTime::now_utc(),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .await,
    );
    // Each send is taken off again (not timed), so the queue stays as short as a served one.
    let mut sends_ms = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let start = Instant::now();
        deps.sqs
            .send_message()
            .queue_url(&queue)
            .message_body("{}")
            .message_group_id("bench")
            .message_deduplication_id(format!("send-{i}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sends_ms.push(start.elapsed().as_secs_f64() * 1e3);
        receive_one(&deps.sqs, &queue).await;
    }
    report("  SQS SendMessage (FIFO agent queue)", &mut sends_ms);
    let sealed = deps
        .store
        .get::<spotwise_core::domain::ClusterSecret>(&keys::cluster_secret(&tenant, &cluster_id))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no secret"));
    report(
        "  KMS Decrypt (cluster secret; the vault caches opened data keys)",
        &mut timed(|| async {
            deps.vault
                .open(
                    &sealed.body.sealed,
                    spotwise_store::actions::cluster_secret_context(&tenant, &cluster_id),
                )
                .await
                .map(|_| ())
        })
        .await,
    );
}

fn report(what: &str, latencies_ms: &mut [f64]) {
    latencies_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * p) as usize];
    println!(
        "{what} over {} (local stack): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        latencies_ms.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
}

/// 1,000 sequential runs of one call, in milliseconds.
async fn timed<F, Fut, E>(mut call: F) -> Vec<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut out = Vec::with_capacity(EVENTS);
    for _ in 0..EVENTS {
        let start = Instant::now();
        call().await.unwrap_or_else(|e| panic!("{e}"));
        out.push(start.elapsed().as_secs_f64() * 1e3);
    }
    out
}

async fn receive_one(sqs: &aws_sdk_sqs::Client, queue: &str) -> aws_sdk_sqs::types::Message {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(message) = received.messages.unwrap_or_default().into_iter().next() {
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(queue)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            return message;
        }
    }
}
