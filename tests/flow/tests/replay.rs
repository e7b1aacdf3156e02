//! Every sample SQS event in events/ whose redelivery must change nothing (interruption
//! signals, cost samples, the savings report, a notification), pointed at the flow's cluster,
//! delivered once on one stack and twice on another (each again at a random later point): the
//! final states match.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use rand::Rng;
use rand::SeedableRng;
use serde_json::Value;
use spotwise_core::action::ActionRecord;
use spotwise_core::config::Env;
use spotwise_flow::Report;
use spotwise_store::Query;
use spotwise_store::keys;
use spotwise_testkit::{LocalStack, fixture};

const SAMPLES: &[(&str, &str)] = &[
    (
        "interruption",
        "events/interruption/sqs-spot-interruption-warning.json",
    ),
    (
        "interruption",
        "events/interruption/sqs-rebalance-recommendation.json",
    ),
    (
        "interruption",
        "events/interruption/sqs-scheduled-change.json",
    ),
    (
        "interruption",
        "events/interruption/sqs-asg-lifecycle-termination.json",
    ),
    (
        "interruption",
        "events/interruption/sqs-instance-state-change.json",
    ),
    ("cost", "events/cost/sqs-cost-sample.json"),
    ("cost", "events/cost/sqs-savings-report.json"),
    ("notify", "events/webhook-dispatcher/sqs-notification.json"),
];
const SAMPLE_TENANT: &str = "\"t1\"";
const SAMPLE_CLUSTER: &str = "111122223333.us-east-1.prod-us-east-1";

/// The samples' bodies with their instance ids, tenant and cluster replaced by the flow's:
/// each distinct sample instance becomes the next instance of the flow's cluster.
fn bodies(report: &Report) -> Vec<(&'static str, String)> {
    let mut instances: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (handler, path) in SAMPLES {
        let event: Value = serde_json::from_str(&fixture(path)).unwrap();
        let mut body = event["Records"][0]["body"].as_str().unwrap().to_owned();
        let sample_ids: Vec<String> = body
            .match_indices("i-")
            .map(|(at, _)| {
                body[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect()
            })
            .collect();
        for id in sample_ids {
            let next = instances.len();
            let ours = instances
                .entry(id.clone())
                .or_insert_with(|| report.instances[next].id.clone())
                .clone();
            body = body.replace(&id, &ours);
        }
        body = body
            .replace(SAMPLE_TENANT, &format!("\"{}\"", report.tenant_id))
            .replace(SAMPLE_CLUSTER, &report.cluster_id);
        out.push((*handler, body));
    }
    out
}

struct Handlers {
    interruption: interruption::Deps,
    cost: cost::Deps,
    notify: webhook_dispatcher::Deps,
}

async fn deliver(stack: &LocalStack, handlers: &Handlers, handler: &str, index: usize, body: &str) {
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("replay-{index}"));
    message.body = Some(body.to_owned());
    if handler == "notify" {
        message.event_source_arn = Some(stack.queue_arn(handlers.notify.notifications.url()).await);
    }
    let mut event = SqsEvent::default();
    event.records.push(message);
    let response = match handler {
        "interruption" => interruption::handle_batch(&handlers.interruption, event).await,
        "cost" => cost::handle_batch(&handlers.cost, event).await,
        _ => webhook_dispatcher::handle_batch(&handlers.notify, event).await,
    }
    .unwrap();
    assert!(
        response.batch_item_failures.is_empty(),
        "{handler} refused {body}"
    );
}

/// What redelivery must not change, with instance ids and node names as their index in the
/// flow's cluster (they differ between stacks).
async fn final_state(twice: bool) -> BTreeMap<String, Vec<String>> {
    let stack = LocalStack::start();
    // Right-sizing sends none of the samples; without it the two runs fit the time limit.
    let report = Box::pin(spotwise_flow::run_without_right_sizing(&stack))
        .await
        .unwrap();
    let sdk = stack.sdk_config().await;
    let env = |logical| Env::from_map(stack.function_env(logical));
    let handlers = Handlers {
        interruption: interruption::Deps::new(
            &sdk,
            &interruption::Config::from_env(&env("InterruptionFunction")).unwrap(),
        ),
        cost: cost::Deps::new(&sdk, &cost::Config::from_env(&env("CostFunction")).unwrap()),
        notify: webhook_dispatcher::Deps::new(
            &sdk,
            &webhook_dispatcher::Config::from_env(&env("WebhookDispatcherFunction")).unwrap(),
        )
        .unwrap(),
    };
    let mut deliveries = bodies(&report);
    if twice {
        // Each sample again, at a random point after its first delivery. (Which of two
        // different signals comes first may change what is issued: a rebalance cordon before
        // a spot warning's drain is a second action, after it nothing. Redelivery may not.)
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for original in deliveries.clone() {
            let first = deliveries.iter().position(|d| *d == original).unwrap_or(0);
            let at = rng.random_range(first + 1..=deliveries.len());
            deliveries.insert(at, original);
        }
    }
    // One message per invocation: moto, unlike DynamoDB, does not serialise concurrent
    // conditional writes.
    for (index, (handler, body)) in deliveries.iter().enumerate() {
        deliver(&stack, &handlers, handler, index, body).await;
    }

    let anonymous = |text: &str| {
        report
            .instances
            .iter()
            .enumerate()
            .fold(text.to_owned(), |text, (i, instance)| {
                text.replace(&instance.node, &format!("node{i}"))
                    .replace(&instance.id, &format!("instance{i}"))
            })
    };
    let store = &handlers.interruption.store;
    let tenant = spotwise_core::TenantId::new(report.tenant_id.clone()).unwrap();
    let mut state = BTreeMap::new();
    let mut actions: Vec<String> = store
        .query_all::<ActionRecord>(
            &Query::partition(keys::tenant_partition(&tenant)).prefix(keys::prefix::ACTION),
        )
        .await
        .unwrap()
        .into_iter()
        // Only what the samples caused: the flow's own plan and interruption differ by stack.
        .filter(|a| {
            a.body.source.starts_with("interruption:")
                && !a.body.source.starts_with("interruption:flow-")
        })
        .map(|a| {
            anonymous(&format!(
                "{:?} {} {:?} {}",
                a.body.action.kind(),
                a.body.action.target_name(),
                a.body.status,
                a.body.source
            ))
        })
        .collect();
    actions.sort();
    state.insert("actions".to_owned(), actions);
    // The flow's agent emptied its queue; what is left the samples sent.
    let mut queued: Vec<String> = stack
        .drain::<Value>(report.queue_url.as_str())
        .await
        .iter()
        .map(|a| anonymous(&a["spec"].to_string()))
        .collect();
    queued.sort();
    state.insert("agent queue".to_owned(), queued);
    let cluster = spotwise_core::ClusterId::new(report.cluster_id.clone()).unwrap();
    let cost_items: Vec<String> = tenant_items(store, &tenant, format!("COST#{cluster}#"))
        .await
        .into_iter()
        .map(|item| {
            format!(
                "{} {}",
                item.key.sk(),
                item.body["summary"]["total"]["cost"]
            )
        })
        .collect();
    state.insert("cost periods".to_owned(), cost_items);
    let reports: Vec<String> = tenant_items(store, &tenant, keys::savings_reports_prefix(&cluster))
        .await
        .into_iter()
        .map(|item| format!("{} {}", item.body["month"], item.body["cost"]))
        .collect();
    state.insert("savings reports".to_owned(), reports);
    let deliveries = stack.queue_depth(stack.resource("DeliveriesQueue")).await;
    state.insert(
        "deliveries queued".to_owned(),
        vec![format!("{}", deliveries.0 + deliveries.1)],
    );
    state
}

async fn tenant_items(
    store: &spotwise_store::Store,
    tenant: &spotwise_core::TenantId,
    prefix: String,
) -> Vec<spotwise_store::Item<Value>> {
    store
        .query_all::<Value>(&Query::partition(keys::tenant_partition(tenant)).prefix(prefix))
        .await
        .unwrap()
}

#[tokio::test]
async fn every_sample_event_delivered_again_later_leaves_the_same_state() {
    // Boxed: the whole flow's future is too large for the test thread's stack.
    let once = Box::pin(final_state(false)).await;
    // Spot warning, Health change and Auto Scaling hook each drain their node; the rebalance
    // recommendation is for the spot warning's instance, whose drain already covers it.
    assert_eq!(
        once["actions"].len(),
        3,
        "the samples reached the cluster: {once:?}"
    );
    let twice = Box::pin(final_state(true)).await;
    assert_eq!(once, twice);
}
