//! Event-to-action-enqueued latency against the local stack: 1,000 spot warnings for 1,000
//! nodes, each through the whole handler (dedup claims, index look-up, cluster and secret
//! reads, signed send to the agent queue, action record, pool counter, notification).
//!
//!     cargo bench -p interruption --bench local_stack

use std::time::Instant;

use interruption::{Config, Deps, InstanceOutcome, Outcome, handle_body};
use spotwise_core::config::Env;
use spotwise_core::domain::{CapacityType, Cluster, Node, Resources};
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
        agent_queue_url: Some(queue),
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
    let nodes: Vec<Item<Node>> = (0..EVENTS)
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
            .with_gsi1(keys::instance_index(&instance))
        })
        .collect();
    deps.store
        .batch_put(&nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let template: serde_json::Value = serde_json::from_str(include_str!(
        "../../../events/eventbridge/spot-interruption-warning.json"
    ))
    .unwrap_or_default();
    let mut latencies_ms = Vec::with_capacity(EVENTS);
    let started = Instant::now();
    for i in 0..EVENTS {
        let mut event = template.clone();
        event["id"] = serde_json::json!(format!("bench-{i}"));
        event["detail"]["instance-id"] = serde_json::json!(format!("i-{i:017x}"));
        let body = event.to_string();
        let start = Instant::now();
        let outcome = handle_body(&deps, &body, OffsetDateTime::now_utc())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        latencies_ms.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(
            matches!(&outcome, Outcome::Handled(list) if matches!(list[0].1, InstanceOutcome::Issued { .. })),
            "{outcome:?}"
        );
    }
    let total = started.elapsed();
    latencies_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * p) as usize];
    println!(
        "event -> action enqueued over {EVENTS} events (local stack): p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({:.0} events/s sequential)",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
        EVENTS as f64 / total.as_secs_f64()
    );
}
