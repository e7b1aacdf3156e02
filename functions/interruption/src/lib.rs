//! Interruption handler: EventBridge events about EC2 instances arrive through SQS; each is
//! deduplicated by event id, mapped to the node it affects through the discovery index, and
//! recorded on that node's tenant.

use std::convert::Infallible;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::{Deserialize, Serialize};
use spotwise_aws::store::{Claim, Item, PutCondition, Query};
use spotwise_aws::{Store, StoreError};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::events::{EnvelopeError, EventEnvelope};
use spotwise_core::{Classify, ClusterId, Disposition, TenantId, keys};
use spotwise_lambda::sqs::{BodyError, process_batch};
use time::OffsetDateTime;
use tracing::{info, warn};

/// Redeliveries of one EventBridge event arrive within minutes; a day is ample.
const DEDUP_HOLD: Duration = Duration::from_secs(24 * 3600);
const CONCURRENCY: usize = 10;

pub struct Config {
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
        })
    }
}

pub struct Deps {
    pub store: Store,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterruptionError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for InterruptionError {
    fn disposition(&self) -> Disposition {
        match self {
            InterruptionError::Body(_) | InterruptionError::Envelope(_) => {
                Disposition::NonRetryable
            }
            InterruptionError::Store(e) => e.disposition(),
        }
    }
}

/// The node an instance runs, as the discovery index stores it.
#[derive(Debug, Deserialize)]
struct IndexedNode {
    tenant_id: TenantId,
    cluster_id: ClusterId,
    name: String,
}

/// What the handler recorded for one affected node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterruptionRecord {
    pub event_id: String,
    pub detail_type: String,
    pub source: String,
    pub instance_id: String,
    pub cluster_id: ClusterId,
    pub node_name: String,
    pub event_time: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

/// How one message ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Recorded {
        nodes: usize,
        unknown_instances: usize,
    },
    Duplicate,
}

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(event, CONCURRENCY, |message| {
        handle_message(deps, message, OffsetDateTime::now_utc())
    })
    .await)
}

async fn handle_message(
    deps: &Deps,
    message: SqsMessage,
    now: OffsetDateTime,
) -> Result<(), InterruptionError> {
    handle_body(
        deps,
        message.body.as_deref().ok_or(BodyError::Missing)?,
        now,
    )
    .await
    .map(|_| ())
}

pub async fn handle_body(
    deps: &Deps,
    body: &str,
    now: OffsetDateTime,
) -> Result<Outcome, InterruptionError> {
    let event = EventEnvelope::parse(body)?;
    let claim_key = keys::idempotency("event", &event.id);
    if deps.store.claim(&claim_key, DEDUP_HOLD, now).await? == Claim::AlreadyClaimed {
        info!(event_id = %event.id, "duplicate delivery skipped");
        return Ok(Outcome::Duplicate);
    }
    match record(deps, &event, now).await {
        Ok(outcome) => Ok(outcome),
        Err(err) => {
            // Give the claim back so the redelivery is processed instead of skipped.
            if let Err(release) = deps.store.delete(&claim_key).await {
                warn!(event_id = %event.id, error = %release, "could not release claim");
            }
            Err(err)
        }
    }
}

async fn record(
    deps: &Deps,
    event: &EventEnvelope,
    now: OffsetDateTime,
) -> Result<Outcome, InterruptionError> {
    let mut nodes = 0;
    let mut unknown_instances = 0;
    for instance_id in event.instance_ids() {
        let index = keys::instance_index(&instance_id);
        let found = deps
            .store
            .query::<IndexedNode>(&Query::gsi1(index.gsi1pk).limit(1))
            .await?
            .items
            .into_iter()
            .next();
        let Some(node) = found else {
            // Not a node we manage: count and drop, never retry.
            warn!(event_id = %event.id, %instance_id, detail_type = %event.detail_type, "unknown instance");
            unknown_instances += 1;
            continue;
        };
        let record = InterruptionRecord {
            event_id: event.id.clone(),
            detail_type: event.detail_type.clone(),
            source: event.source.clone(),
            instance_id: instance_id.clone(),
            cluster_id: node.body.cluster_id.clone(),
            node_name: node.body.name.clone(),
            event_time: event.time.clone(),
            received_at: now,
        };
        let key = keys::interruption(&node.body.tenant_id, &format!("{}#{instance_id}", event.id));
        deps.store
            .put(&Item::new(key, record), PutCondition::Always)
            .await?;
        info!(event_id = %event.id, %instance_id, tenant = %node.body.tenant_id,
              cluster = %node.body.cluster_id, node = %node.body.name, "interruption recorded");
        nodes += 1;
    }
    Ok(Outcome::Recorded {
        nodes,
        unknown_instances,
    })
}

#[cfg(test)]
mod tests {
    use spotwise_core::domain::{CapacityType, Node, Resources};
    use spotwise_testkit::{LocalStack, fixture};

    use super::*;

    async fn deps(stack: &LocalStack) -> Deps {
        let config =
            Config::from_env(&Env::from_map(stack.function_env("InterruptionFunction"))).unwrap();
        Deps::new(&stack.sdk_config().await, &config)
    }

    async fn index_node(deps: &Deps, tenant: &str, instance_id: &str, name: &str) {
        let node = Node {
            tenant_id: TenantId::new(tenant).unwrap(),
            cluster_id: ClusterId::new("c1").unwrap(),
            name: name.into(),
            instance_id: Some(instance_id.into()),
            instance_type: "m5.large".into(),
            zone: "us-east-1b".into(),
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
        };
        let item = Item::new(keys::node(&node.cluster_id, name), node)
            .with_gsi1(keys::instance_index(instance_id));
        deps.store.put(&item, PutCondition::Always).await.unwrap();
    }

    fn sqs_event(name: &str) -> SqsEvent {
        serde_json::from_str(&fixture(&format!("events/interruption/sqs-{name}"))).unwrap()
    }

    #[tokio::test]
    async fn spot_warning_is_recorded_once_for_its_node() {
        let stack = LocalStack::start();
        let deps = deps(&stack).await;
        index_node(
            &deps,
            "t1",
            "i-0b662ef9931388ba0",
            "ip-10-0-1-17.ec2.internal",
        )
        .await;

        let body = fixture("events/eventbridge/spot-interruption-warning.json");
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            handle_body(&deps, &body, now).await.unwrap(),
            Outcome::Recorded {
                nodes: 1,
                unknown_instances: 0
            }
        );
        assert_eq!(
            handle_body(&deps, &body, now).await.unwrap(),
            Outcome::Duplicate
        );

        let tenant = TenantId::new("t1").unwrap();
        let records = deps
            .store
            .query_all::<InterruptionRecord>(
                &Query::partition(keys::tenant_partition(&tenant)).prefix("INTERRUPTION#"),
            )
            .await
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].body.node_name, "ip-10-0-1-17.ec2.internal");
        assert_eq!(
            records[0].body.detail_type,
            "EC2 Spot Instance Interruption Warning"
        );
    }

    #[tokio::test]
    async fn unknown_instances_are_dropped_not_retried() {
        let stack = LocalStack::start();
        let deps = deps(&stack).await;
        let response = handle_batch(&deps, sqs_event("scheduled-change.json"))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn malformed_message_fails_alone() {
        let stack = LocalStack::start();
        let deps = deps(&stack).await;
        index_node(&deps, "t1", "i-0b662ef9931388ba0", "n1").await;
        let mut event = sqs_event("rebalance-recommendation.json");
        let mut poison = event.records[0].clone();
        poison.message_id = Some("poison".into());
        poison.body = Some("{\"not\": \"an event\"".into());
        event.records.push(poison);
        let response = handle_batch(&deps, event).await.unwrap();
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["poison"]);
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
            let wrapped = sqs_event(name);
            let body: serde_json::Value =
                serde_json::from_str(wrapped.records[0].body.as_deref().unwrap()).unwrap();
            let raw: serde_json::Value =
                serde_json::from_str(&fixture(&format!("events/eventbridge/{name}"))).unwrap();
            assert_eq!(body, raw, "{name}");
        }
    }
}
