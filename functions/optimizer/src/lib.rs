//! Optimizer function: one SQS message per cluster to plan. It loads the cluster and its nodes
//! and stores the capacity summary every plan starts from (node mix by capacity type, instance
//! type and zone; allocatable totals). Requests for clusters that do not exist are dropped and
//! counted, never retried.

use std::collections::BTreeMap;
use std::convert::Infallible;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::{Deserialize, Serialize};
use spotwise_aws::store::{Item, PutCondition, Query};
use spotwise_aws::{Store, StoreError};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::{CapacityType, Cluster, Node};
use spotwise_core::keys::{self, Key};
use spotwise_core::messages::OptimizeRequest;
use spotwise_core::{Classify, ClusterId, Disposition, TenantId};
use spotwise_lambda::sqs::{BodyError, parse_body, process_batch};
use time::OffsetDateTime;
use tracing::{info, warn};

/// Clusters are planned independently; a few at a time keeps memory bounded.
const CONCURRENCY: usize = 2;

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
pub enum OptimizeError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for OptimizeError {
    fn disposition(&self) -> Disposition {
        match self {
            OptimizeError::Body(e) => e.disposition(),
            OptimizeError::Store(e) => e.disposition(),
        }
    }
}

/// Node count and allocatable capacity for one group of nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityTotals {
    pub nodes: u32,
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub pods: u64,
}

impl CapacityTotals {
    fn add(&mut self, node: &Node) {
        self.nodes += 1;
        self.cpu_m += node.allocatable.cpu_m;
        self.mem_mib += node.allocatable.mem_mib;
        self.pods += u64::from(node.allocatable.pods);
    }
}

/// The capacity a plan starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacitySummary {
    pub cluster_id: ClusterId,
    pub total: CapacityTotals,
    pub by_capacity_type: BTreeMap<String, CapacityTotals>,
    /// Keyed `instance_type/zone/capacity_type`.
    pub by_pool: BTreeMap<String, CapacityTotals>,
    pub cordoned_nodes: u32,
    pub trigger: String,
    #[serde(with = "time::serde::rfc3339")]
    pub computed_at: OffsetDateTime,
}

pub fn summarize(
    cluster_id: &ClusterId,
    nodes: &[Node],
    trigger: &str,
    now: OffsetDateTime,
) -> CapacitySummary {
    let mut summary = CapacitySummary {
        cluster_id: cluster_id.clone(),
        total: CapacityTotals::default(),
        by_capacity_type: BTreeMap::new(),
        by_pool: BTreeMap::new(),
        cordoned_nodes: 0,
        trigger: trigger.to_owned(),
        computed_at: now,
    };
    for node in nodes {
        let capacity = match node.capacity_type {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
        };
        summary.total.add(node);
        summary
            .by_capacity_type
            .entry(capacity.into())
            .or_default()
            .add(node);
        summary
            .by_pool
            .entry(format!("{}/{}/{capacity}", node.instance_type, node.zone))
            .or_default()
            .add(node);
        summary.cordoned_nodes += u32::from(node.unschedulable);
    }
    summary
}

pub fn summary_key(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        keys::tenant_partition(tenant),
        format!("CAPACITY#{cluster}"),
    )
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Summarized(CapacitySummary),
    UnknownCluster,
}

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(event, CONCURRENCY, |message| handle_message(deps, message)).await)
}

async fn handle_message(deps: &Deps, message: SqsMessage) -> Result<(), OptimizeError> {
    let request: OptimizeRequest = parse_body(&message, "optimize request")?;
    optimize(deps, &request, OffsetDateTime::now_utc())
        .await
        .map(|_| ())
}

pub async fn optimize(
    deps: &Deps,
    request: &OptimizeRequest,
    now: OffsetDateTime,
) -> Result<Outcome, OptimizeError> {
    let cluster_key = keys::cluster(&request.tenant_id, &request.cluster_id);
    if deps.store.get::<Cluster>(&cluster_key).await?.is_none() {
        warn!(tenant = %request.tenant_id, cluster = %request.cluster_id, "optimize request for unknown cluster dropped");
        return Ok(Outcome::UnknownCluster);
    }
    let nodes: Vec<Node> = deps
        .store
        .query_all::<Node>(
            &Query::partition(format!("C#{}", request.cluster_id)).prefix(keys::prefix::NODE),
        )
        .await?
        .into_iter()
        .map(|item| item.body)
        .collect();
    let summary = summarize(&request.cluster_id, &nodes, &request.trigger, now);
    deps.store
        .put(
            &Item::new(
                summary_key(&request.tenant_id, &request.cluster_id),
                summary.clone(),
            ),
            PutCondition::Always,
        )
        .await?;
    info!(tenant = %request.tenant_id, cluster = %request.cluster_id, nodes = summary.total.nodes,
          spot_nodes = summary.by_capacity_type.get("spot").map_or(0, |t| t.nodes), "capacity summarized");
    Ok(Outcome::Summarized(summary))
}

#[cfg(test)]
mod tests {
    use spotwise_core::domain::Resources;
    use spotwise_testkit::{LocalStack, fixture};

    use super::*;

    fn node(name: &str, itype: &str, zone: &str, capacity_type: CapacityType, cpu_m: u64) -> Node {
        Node {
            tenant_id: TenantId::new("t1").unwrap(),
            cluster_id: ClusterId::new("c1").unwrap(),
            name: name.into(),
            instance_id: None,
            instance_type: itype.into(),
            zone: zone.into(),
            zone_id: None,
            capacity_type,
            allocatable: Resources {
                cpu_m,
                mem_mib: cpu_m * 4,
                pods: 29,
                gpus: 0,
            },
            labels: Default::default(),
            taints: vec![],
            unschedulable: name.ends_with("cordoned"),
            departed_at: None,
        }
    }

    #[test]
    fn summary_groups_by_capacity_type_and_pool() {
        let nodes = [
            node("a", "m5.large", "us-east-1a", CapacityType::Spot, 1930),
            node("b", "m5.large", "us-east-1a", CapacityType::Spot, 1930),
            node(
                "c-cordoned",
                "c5.xlarge",
                "us-east-1b",
                CapacityType::OnDemand,
                3920,
            ),
        ];
        let s = summarize(
            &ClusterId::new("c1").unwrap(),
            &nodes,
            "test",
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(
            s.total,
            CapacityTotals {
                nodes: 3,
                cpu_m: 7780,
                mem_mib: 31120,
                pods: 87
            }
        );
        assert_eq!(s.by_capacity_type["spot"].nodes, 2);
        assert_eq!(s.by_pool["m5.large/us-east-1a/spot"].cpu_m, 3860);
        assert_eq!(s.cordoned_nodes, 1);
    }

    #[tokio::test]
    async fn known_cluster_is_summarized_and_unknown_dropped() {
        let stack = LocalStack::start();
        let config =
            Config::from_env(&Env::from_map(stack.function_env("OptimizerFunction"))).unwrap();
        let deps = Deps::new(&stack.sdk_config().await, &config);
        let tenant = TenantId::new("t1").unwrap();
        // The cluster the sample event names.
        let cluster_id = ClusterId::new("111122223333.us-east-1.prod-us-east-1").unwrap();
        let cluster = Cluster {
            tenant_id: tenant.clone(),
            id: cluster_id.clone(),
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            name: "prod".into(),
            arn: "arn:aws:eks:us-east-1:111122223333:cluster/prod".into(),
            kubernetes_version: Some("1.33".into()),
            status: "ACTIVE".into(),
            agent_queue_url: None,
            vanished_at: None,
        };
        deps.store
            .put(
                &Item::new(keys::cluster(&tenant, &cluster_id), cluster),
                PutCondition::IfAbsent,
            )
            .await
            .unwrap();
        for n in [
            node("a", "m5.large", "us-east-1a", CapacityType::Spot, 1930),
            node("b", "m5.xlarge", "us-east-1b", CapacityType::OnDemand, 3920),
        ] {
            deps.store
                .put(
                    &Item::new(keys::node(&cluster_id, &n.name), n),
                    PutCondition::Always,
                )
                .await
                .unwrap();
        }

        let event: SqsEvent =
            serde_json::from_str(&fixture("events/optimizer/sqs-optimize-request.json")).unwrap();
        let response = handle_batch(&deps, event).await.unwrap();
        assert!(response.batch_item_failures.is_empty());
        let stored = deps
            .store
            .get::<CapacitySummary>(&summary_key(&tenant, &cluster_id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.body.total.nodes, 2);
        assert_eq!(stored.body.trigger, "schedule");

        let unknown = OptimizeRequest {
            tenant_id: tenant,
            cluster_id: ClusterId::new("nope").unwrap(),
            trigger: "t".into(),
        };
        assert_eq!(
            optimize(&deps, &unknown, OffsetDateTime::now_utc())
                .await
                .unwrap(),
            Outcome::UnknownCluster
        );
    }

    #[tokio::test]
    async fn invalid_request_fails_only_itself() {
        let stack = LocalStack::start();
        let config =
            Config::from_env(&Env::from_map(stack.function_env("OptimizerFunction"))).unwrap();
        let deps = Deps::new(&stack.sdk_config().await, &config);
        let mut event: SqsEvent =
            serde_json::from_str(&fixture("events/optimizer/sqs-optimize-request.json")).unwrap();
        let mut bad = event.records[0].clone();
        bad.message_id = Some("bad".into());
        bad.body = Some(r#"{"tenant_id":"t#1","cluster_id":"c1"}"#.into());
        event.records.push(bad);
        let response = handle_batch(&deps, event).await.unwrap();
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["bad"]);
    }
}
