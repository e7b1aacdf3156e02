//! Discovery, in two steps that scale to thousands of accounts:
//!
//! - on its schedule, [`fan_out`] puts one message per linked account on the discovery queue;
//! - for each message, [`discover_account`] assumes the tenant's role (with its ExternalId) and
//!   inventories every enabled region: EKS clusters and node groups, and the EC2 instances that
//!   are their nodes. The store is reconciled: new and changed items are written (nothing else),
//!   vanished clusters and nodes are marked, not deleted, and each node is indexed by instance id
//!   for the interruption handler. An account whose role cannot be assumed is marked unhealthy
//!   and its tenant notified; other accounts are unaffected.

pub mod inventory;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::{Deserialize, Serialize};
use spotwise_aws::cross_account::{CrossAccount, LinkError};
use spotwise_aws::queue::QueueError;
use spotwise_aws::{AwsFailure, Queue};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::{
    Account, AccountHealth, Cluster, InstanceLocation, Node, Nodegroup, Notification, Resources,
    Severity,
};
use spotwise_core::messages::{DiscoverAccount, ScheduleTrigger};
use spotwise_core::{Classify, ClusterId, Disposition, TenantId};
use spotwise_lambda::sqs::{BodyError, parse_body, process_batch};
use spotwise_store::keys;
use spotwise_store::runs;
use spotwise_store::{Item, PutCondition, Query};
use spotwise_store::{Store, StoreError};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::inventory::{CallCounter, SeenCluster};

const RUN_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// A departed instance's location is kept for signals that arrive late (a day).
const DEPARTED_LOCATION_KEPT: time::Duration = time::Duration::days(1);
/// Accounts inventoried at once by one invocation (a batch holds up to 10 messages).
const ACCOUNT_CONCURRENCY: usize = 2;

pub struct Config {
    pub common: CommonConfig,
    pub discovery_queue_url: String,
    pub notifications_queue_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            discovery_queue_url: env.required("DISCOVERY_QUEUE_URL")?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub discovery_queue: Queue,
    pub notifications: Queue,
    pub accounts: CrossAccount,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            discovery_queue: Queue::new(sqs.clone(), &config.discovery_queue_url),
            notifications: Queue::new(sqs, &config.notifications_queue_url),
            accounts: CrossAccount::new(sdk.clone(), "spotwise-discovery"),
        }
    }
}

/// The function's two triggers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DiscoveryEvent {
    /// Per-account messages from the discovery queue.
    Accounts(SqsEvent),
    /// The schedule.
    Schedule(ScheduleTrigger),
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DiscoveryResponse {
    Batch(SqsBatchResponse),
    FanOut(FanOut),
}

pub async fn handle(
    deps: &Deps,
    event: DiscoveryEvent,
) -> Result<DiscoveryResponse, DiscoveryError> {
    match event {
        DiscoveryEvent::Accounts(batch) => {
            let Ok(response) = handle_batch(deps, batch).await;
            Ok(DiscoveryResponse::Batch(response))
        }
        DiscoveryEvent::Schedule(trigger) => {
            fan_out(deps, trigger).await.map(DiscoveryResponse::FanOut)
        }
    }
}

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(
        event,
        ACCOUNT_CONCURRENCY,
        |message: SqsMessage| async move {
            let request: DiscoverAccount = parse_body(&message, "discovery request")?;
            let result = discover_account(deps, &request, OffsetDateTime::now_utc()).await;
            let outcome = runs::outcome_of(&result, |run| {
                let summary = format!(
                    "{} cluster(s) in {} region(s)",
                    run.clusters,
                    run.regions.len()
                );
                if run.healthy && run.errors.is_empty() {
                    Ok(summary)
                } else {
                    Err(format!("{summary}; errors: {}", run.errors.join("; ")))
                }
            });
            runs::report(
                &deps.store,
                &deps.notifications,
                request.scheduled.as_ref(),
                outcome,
            )
            .await;
            result.map(|_| ())
        },
    )
    .await)
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Aws(AwsFailure),
}

impl Classify for DiscoveryError {
    fn disposition(&self) -> Disposition {
        match self {
            DiscoveryError::Body(e) => e.disposition(),
            DiscoveryError::Store(e) => e.disposition(),
            DiscoveryError::Queue(e) => e.disposition(),
            DiscoveryError::Aws(e) => e.disposition(),
        }
    }
}

/// What one fan-out did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FanOut {
    pub run_id: String,
    pub accounts: usize,
    pub enqueued: usize,
}

/// Only the fields the fan-out needs, so account schema changes never break it.
#[derive(Debug, Deserialize)]
struct LinkedAccount {
    tenant_id: TenantId,
    account_id: String,
}

pub async fn fan_out(deps: &Deps, trigger: ScheduleTrigger) -> Result<FanOut, DiscoveryError> {
    let run_id = ulid::Ulid::new().to_string();
    let linked = deps
        .store
        .query_all::<LinkedAccount>(&Query::gsi1(keys::LINKED_ACCOUNTS_PARTITION))
        .await?;
    let messages: Vec<DiscoverAccount> = linked
        .into_iter()
        .map(|item| DiscoverAccount {
            tenant_id: item.body.tenant_id,
            account_id: item.body.account_id,
            run_id: run_id.clone(),
            scheduled: None,
        })
        .collect();
    let enqueued = deps.discovery_queue.send_all(&messages).await?;
    info!(%run_id, accounts = messages.len(), enqueued, scheduled_at = ?trigger.time, "discovery fan-out");
    Ok(FanOut {
        run_id,
        accounts: messages.len(),
        enqueued,
    })
}

/// What one account's discovery did: the run record, kept 30 days in the tenant's partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRun {
    pub run_id: String,
    pub tenant_id: TenantId,
    pub account_id: String,
    pub healthy: bool,
    pub regions: Vec<String>,
    pub clusters: usize,
    pub nodes: usize,
    pub new_clusters: Vec<String>,
    pub vanished_clusters: Vec<String>,
    pub api_calls: usize,
    pub writes: usize,
    pub errors: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_ms: u64,
}

/// Stable across runs and readable: `<account>.<region>.<eks name>`.
pub fn cluster_id(account_id: &str, region: &str, name: &str) -> Option<ClusterId> {
    ClusterId::new(format!("{account_id}.{region}.{name}")).ok()
}

pub async fn discover_account(
    deps: &Deps,
    request: &DiscoverAccount,
    now: OffsetDateTime,
) -> Result<AccountRun, DiscoveryError> {
    let started = std::time::Instant::now();
    let mut run = AccountRun {
        run_id: request.run_id.clone(),
        tenant_id: request.tenant_id.clone(),
        account_id: request.account_id.clone(),
        healthy: true,
        regions: vec![],
        clusters: 0,
        nodes: 0,
        new_clusters: vec![],
        vanished_clusters: vec![],
        api_calls: 0,
        writes: 0,
        errors: vec![],
        started_at: now,
        duration_ms: 0,
    };
    let account_key = keys::account(&request.tenant_id, &request.account_id);
    let Some(mut account) = deps.store.get::<Account>(&account_key).await? else {
        warn!(tenant = %request.tenant_id, account = %request.account_id, "account no longer linked; skipped");
        return Ok(run);
    };
    run.regions = account.body.regions.clone();

    run.api_calls += 1;
    let config = match deps
        .accounts
        .config_for(&account.body.role_arn, &account.body.external_id)
        .await
    {
        Ok(config) => config,
        Err(LinkError::Aws(failure)) if failure.retryable => {
            return Err(DiscoveryError::Aws(failure));
        }
        Err(err) => {
            run.healthy = false;
            run.errors.push(err.to_string());
            let was_unhealthy = matches!(account.body.health, AccountHealth::Unhealthy { .. });
            let reason = err.to_string();
            set_health(
                deps,
                &mut account,
                AccountHealth::Unhealthy {
                    reason: reason.clone(),
                },
                now,
            )
            .await?;
            run.writes += 1;
            // Tell the tenant when the account becomes unreachable, not on every run after.
            if !was_unhealthy {
                notify(
                    deps,
                    &account.body,
                    Severity::Critical,
                    "AWS account unreachable",
                    format!("Spotwise cannot assume {}: {reason}. Check the role's trust policy and ExternalId.", account.body.role_arn.as_str()),
                    format!("account-unhealthy#{}", account.body.account_id),
                    now,
                )
                .await?;
            }
            finish(deps, &mut run, started).await?;
            return Ok(run);
        }
    };

    let calls = CallCounter::default();
    let mut seen: Vec<(String, SeenCluster)> = Vec::new();
    let mut scanned_regions = Vec::new();
    let mut first_failure = None;
    for region in &account.body.regions {
        match inventory::region(&spotwise_aws::sdk::for_region(&config, region), &calls).await {
            Ok(clusters) => {
                scanned_regions.push(region.clone());
                seen.extend(clusters.into_iter().map(|c| (region.clone(), c)));
            }
            Err(failure) => {
                warn!(account = %request.account_id, %region, error = %failure, "region inventory failed");
                run.errors.push(format!("{region}: {failure}"));
                first_failure.get_or_insert(failure);
            }
        }
    }
    run.api_calls += calls.get();
    if scanned_regions.is_empty()
        && let Some(failure) = first_failure.filter(|f| f.retryable)
    {
        // Nothing was read and a retry may work (throttling): let SQS redeliver.
        return Err(DiscoveryError::Aws(failure));
    }

    reconcile(deps, &account.body, &scanned_regions, &seen, &mut run, now).await?;
    if account.body.health != AccountHealth::Healthy {
        set_health(deps, &mut account, AccountHealth::Healthy, now).await?;
        run.writes += 1;
    }
    finish(deps, &mut run, started).await?;
    info!(tenant = %request.tenant_id, account = %request.account_id, clusters = run.clusters, nodes = run.nodes,
          api_calls = run.api_calls, writes = run.writes, errors = run.errors.len(), "account discovered");
    Ok(run)
}

async fn finish(
    deps: &Deps,
    run: &mut AccountRun,
    started: std::time::Instant,
) -> Result<(), DiscoveryError> {
    run.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let item = Item::new(
        keys::discovery_run(&run.tenant_id, &run.account_id, &run.run_id),
        run.clone(),
    )
    .expiring_at(run.started_at + RUN_RETENTION);
    deps.store.put(&item, PutCondition::Always).await?;
    Ok(())
}

async fn set_health(
    deps: &Deps,
    account: &mut Item<Account>,
    health: AccountHealth,
    _now: OffsetDateTime,
) -> Result<(), DiscoveryError> {
    account.body.health = health;
    match deps.store.update_versioned(account).await {
        Ok(version) => {
            account.version = version;
            Ok(())
        }
        // Changed by the API meanwhile (regions edited, unlinked); the next run sees it.
        Err(StoreError::StaleVersion { .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

async fn notify(
    deps: &Deps,
    account: &Account,
    severity: Severity,
    title: &str,
    body: String,
    dedup_key: String,
    now: OffsetDateTime,
) -> Result<(), DiscoveryError> {
    let notification = Notification {
        tenant_id: account.tenant_id.clone(),
        event_type: "discovery_change".into(),
        severity,
        cluster_id: None,
        labels: BTreeMap::from([("account_id".to_owned(), account.account_id.clone())]),
        title: title.to_owned(),
        body,
        links: vec![],
        occurred_at: now,
        dedup_key,
    };
    deps.notifications.send(&notification, None).await?;
    Ok(())
}

/// Writes what is new or changed, marks what vanished, and leaves everything else untouched.
/// Only regions that were read are reconciled, so a region outage never marks its clusters gone.
async fn reconcile(
    deps: &Deps,
    account: &Account,
    scanned_regions: &[String],
    seen: &[(String, SeenCluster)],
    run: &mut AccountRun,
    now: OffsetDateTime,
) -> Result<(), DiscoveryError> {
    let tenant = &account.tenant_id;
    let partition = keys::tenant_partition(tenant);
    let stored_clusters: HashMap<ClusterId, Item<Cluster>> = deps
        .store
        .query_all::<Cluster>(
            &Query::partition(&partition)
                .prefix(keys::account_clusters_prefix(&account.account_id)),
        )
        .await?
        .into_iter()
        .filter(|i| i.body.account_id == account.account_id)
        .map(|i| (i.body.id.clone(), i))
        .collect();
    let stored_groups: HashMap<keys::Key, Item<Nodegroup>> = deps
        .store
        .query_all::<Nodegroup>(
            &Query::partition(&partition)
                .prefix(keys::account_nodegroups_prefix(&account.account_id)),
        )
        .await?
        .into_iter()
        .map(|i| (i.key.clone(), i))
        .collect();

    let mut writes_clusters: Vec<Item<Cluster>> = Vec::new();
    let mut writes_groups: Vec<Item<Nodegroup>> = Vec::new();
    let mut writes_nodes: Vec<Item<Node>> = Vec::new();
    let mut writes_locations: Vec<Item<InstanceLocation>> = Vec::new();
    let mut seen_ids = Vec::new();
    for (region, c) in seen {
        let Some(id) = cluster_id(&account.account_id, region, &c.name) else {
            run.errors.push(format!(
                "{region}: cluster name {:?} cannot form an id",
                c.name
            ));
            continue;
        };
        seen_ids.push(id.clone());
        run.clusters += 1;
        let previous = stored_clusters.get(&id);
        let cluster = Cluster {
            tenant_id: tenant.clone(),
            id: id.clone(),
            account_id: account.account_id.clone(),
            region: region.clone(),
            name: c.name.clone(),
            arn: c.arn.clone(),
            kubernetes_version: c.version.clone(),
            status: c.status.clone(),
            agent_queue_url: previous.and_then(|p| p.body.agent_queue_url.clone()),
            vanished_at: None,
        };
        match previous {
            None => {
                run.new_clusters.push(id.to_string());
                writes_clusters.push(Item::new(keys::cluster(tenant, &id), cluster));
            }
            Some(p) if p.body != cluster => writes_clusters.push(Item {
                body: cluster,
                ..p.clone()
            }),
            Some(_) => {}
        }

        for g in &c.nodegroups {
            let key = keys::nodegroup(tenant, &id, &g.name);
            let group = Nodegroup {
                cluster_id: id.clone(),
                name: g.name.clone(),
                capacity_type: g.capacity_type,
                instance_types: g.instance_types.clone(),
                min_size: g.min_size,
                max_size: g.max_size,
                desired_size: g.desired_size,
                status: g.status.clone(),
                vanished_at: None,
            };
            if stored_groups.get(&key).is_none_or(|p| p.body != group) {
                writes_groups.push(Item::new(key, group));
            }
        }

        let stored_nodes: HashMap<String, Item<Node>> = deps
            .store
            .query_all::<Node>(
                &Query::partition(keys::cluster_partition(tenant, &id)).prefix(keys::prefix::NODE),
            )
            .await?
            .into_iter()
            .map(|i| (i.body.name.clone(), i))
            .collect();
        let mut live = Vec::new();
        for instance in &c.instances {
            run.nodes += 1;
            live.push(instance.node_name.clone());
            let previous = stored_nodes.get(&instance.node_name);
            // Cloud facts come from EC2; what the agent reports (allocatable, taints, ...) is kept.
            let mut node = previous.map(|p| p.body.clone()).unwrap_or_else(|| Node {
                tenant_id: tenant.clone(),
                cluster_id: id.clone(),
                name: instance.node_name.clone(),
                instance_id: None,
                instance_type: String::new(),
                zone: String::new(),
                zone_id: None,
                capacity_type: instance.capacity_type,
                allocatable: Resources::default(),
                labels: BTreeMap::new(),
                taints: vec![],
                unschedulable: false,
                departed_at: None,
            });
            let before = node.clone();
            node.instance_id = Some(instance.instance_id.clone());
            node.instance_type = instance.instance_type.clone();
            node.zone = instance.zone.clone();
            node.zone_id = instance.zone_id.clone();
            node.capacity_type = instance.capacity_type;
            node.labels.extend(instance.labels.clone());
            node.departed_at = None;
            if previous.is_none() || before != node {
                writes_locations.push(Item::new(
                    keys::instance(&instance.instance_id),
                    InstanceLocation::of(&node),
                ));
                writes_nodes.push(Item::new(keys::node(tenant, &id, &node.name), node));
            }
        }
        for (name, item) in &stored_nodes {
            if item.body.departed_at.is_none() && !live.contains(name) {
                let mut gone = item.clone();
                gone.body.departed_at = Some(now);
                // Late signals about a departed instance still find it for a while.
                if let Some(instance_id) = &gone.body.instance_id {
                    writes_locations.push(
                        Item::new(
                            keys::instance(instance_id),
                            InstanceLocation::of(&gone.body),
                        )
                        .expiring_at(now + DEPARTED_LOCATION_KEPT),
                    );
                }
                writes_nodes.push(gone);
            }
        }
    }

    for (id, item) in &stored_clusters {
        if item.body.vanished_at.is_none()
            && scanned_regions.contains(&item.body.region)
            && !seen_ids.contains(id)
        {
            run.vanished_clusters.push(id.to_string());
            let mut gone = item.clone();
            gone.body.vanished_at = Some(now);
            writes_clusters.push(gone);
        }
    }

    run.writes +=
        writes_clusters.len() + writes_groups.len() + writes_nodes.len() + writes_locations.len();
    deps.store.batch_put(&writes_clusters).await?;
    deps.store.batch_put(&writes_groups).await?;
    deps.store.batch_put(&writes_nodes).await?;
    deps.store.batch_put(&writes_locations).await?;

    for id in &run.new_clusters {
        notify(
            deps,
            account,
            Severity::Info,
            "EKS cluster discovered",
            format!("Spotwise found cluster {id}."),
            format!("cluster-new#{id}"),
            now,
        )
        .await?;
    }
    for id in &run.vanished_clusters {
        notify(
            deps,
            account,
            Severity::Warning,
            "EKS cluster no longer found",
            format!("Cluster {id} was not found in its region; its history is kept."),
            format!("cluster-gone#{id}"),
            now,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use spotwise_core::domain::{Account, AccountHealth, RoleArn};
    use spotwise_store::{Item, PutCondition};
    use spotwise_testkit::LocalStack;
    use time::OffsetDateTime;

    use super::*;

    async fn deps(stack: &LocalStack) -> Deps {
        let config =
            Config::from_env(&Env::from_map(stack.function_env("DiscoveryFunction"))).unwrap();
        Deps::new(&stack.sdk_config().await, &config)
    }

    fn account(tenant: &str, id: &str) -> Item<Account> {
        let tenant_id = TenantId::new(tenant).unwrap();
        Item::new(
            keys::account(&tenant_id, id),
            Account {
                tenant_id: tenant_id.clone(),
                account_id: id.into(),
                role_arn: RoleArn::parse(&format!("arn:aws:iam::{id}:role/SpotwiseAccess"))
                    .unwrap(),
                external_id: "sw-ext-1".into(),
                regions: vec!["us-east-1".into()],
                health: AccountHealth::Healthy,
                linked_at: OffsetDateTime::UNIX_EPOCH,
                event_forwarding: None,
            },
        )
        .with_gsi1(keys::linked_accounts_index(&tenant_id, id))
    }

    #[tokio::test]
    async fn one_message_per_linked_account() {
        let stack = LocalStack::start();
        let deps = deps(&stack).await;
        // 23 accounts: more than two SendMessageBatch calls.
        for i in 0..23 {
            let tenant = if i % 2 == 0 { "t-even" } else { "t-odd" };
            deps.store
                .put(
                    &account(tenant, &format!("{:012}", 100_000 + i)),
                    PutCondition::IfAbsent,
                )
                .await
                .unwrap();
        }
        let event: ScheduleTrigger =
            serde_json::from_str(&spotwise_testkit::fixture("events/discovery/schedule.json"))
                .unwrap();
        let result = fan_out(&deps, event).await.unwrap();
        assert_eq!((result.accounts, result.enqueued), (23, 23));

        let messages: Vec<DiscoverAccount> = stack.drain(stack.resource("DiscoveryQueue")).await;
        assert!(messages.iter().all(|m| m.run_id == result.run_id));
        let received: HashMap<String, DiscoverAccount> = messages
            .into_iter()
            .map(|m| (m.account_id.clone(), m))
            .collect();
        assert_eq!(received.len(), 23, "no duplicates, none missing");
        assert_eq!(received["000000100001"].tenant_id.as_str(), "t-odd");
    }

    #[tokio::test]
    async fn no_accounts_means_no_messages() {
        let stack = LocalStack::start();
        let result = fan_out(&deps(&stack).await, ScheduleTrigger::default())
            .await
            .unwrap();
        assert_eq!((result.accounts, result.enqueued), (0, 0));
    }

    mod worker {
        use aws_sdk_ec2::types::{InstanceType as Ec2Type, ResourceType, Tag, TagSpecification};
        use aws_sdk_eks::types::{CapacityTypes, NodegroupScalingConfig, VpcConfigRequest};
        use spotwise_aws::sdk::for_region;
        use spotwise_core::domain::{CapacityType, RoleArn};
        use spotwise_store::accounts;

        use super::*;

        const ROLE: &str = "arn:aws:iam::111122223333:role/SpotwiseAccess";

        struct Customer {
            stack: LocalStack,
            deps: Deps,
            customer: SdkConfig,
            tenant: TenantId,
        }

        async fn linked_customer() -> Customer {
            let stack = LocalStack::start();
            let deps = deps(&stack).await;
            let tenant = TenantId::new("t1").unwrap();
            let now = OffsetDateTime::now_utc();
            let role = RoleArn::parse(ROLE).unwrap();
            let unlinked = accounts::link(
                &deps.store,
                &deps.accounts,
                &tenant,
                &role,
                vec![],
                now,
                "test",
            )
            .await;
            assert!(matches!(
                unlinked,
                Err(accounts::AccountError::NoExternalId)
            ));
            let external_id = accounts::issue_external_id(&deps.store, &tenant, now, "test")
                .await
                .unwrap();
            assert_eq!(
                accounts::issue_external_id(&deps.store, &tenant, now, "test")
                    .await
                    .unwrap(),
                external_id,
                "stable per tenant"
            );
            let account = accounts::link(
                &deps.store,
                &deps.accounts,
                &tenant,
                &role,
                vec!["us-east-1".into(), "eu-west-1".into()],
                now,
                "test",
            )
            .await
            .unwrap();
            assert_eq!(account.account_id, "111122223333");
            assert!(matches!(
                accounts::link(
                    &deps.store,
                    &deps.accounts,
                    &tenant,
                    &role,
                    vec![],
                    now,
                    "test"
                )
                .await,
                Err(accounts::AccountError::AlreadyLinked(_))
            ));
            let customer = deps.accounts.config_for(&role, &external_id).await.unwrap();
            Customer {
                stack,
                deps,
                customer,
                tenant,
            }
        }

        async fn create_cluster(
            customer: &SdkConfig,
            region: &str,
            name: &str,
            nodegroup: Option<&str>,
        ) {
            let eks = aws_sdk_eks::Client::new(&for_region(customer, region));
            eks.create_cluster()
                .name(name)
                .role_arn("arn:aws:iam::111122223333:role/eks-cluster")
                .resources_vpc_config(
                    VpcConfigRequest::builder()
                        .subnet_ids("subnet-0a1b2c3d")
                        .build(),
                )
                .send()
                .await
                .unwrap();
            if let Some(group) = nodegroup {
                eks.create_nodegroup()
                    .cluster_name(name)
                    .nodegroup_name(group)
                    .node_role("arn:aws:iam::111122223333:role/eks-node")
                    .subnets("subnet-0a1b2c3d")
                    .capacity_type(CapacityTypes::Spot)
                    .instance_types("m5.large")
                    .scaling_config(
                        NodegroupScalingConfig::builder()
                            .min_size(1)
                            .max_size(5)
                            .desired_size(2)
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
        }

        async fn launch(
            customer: &SdkConfig,
            region: &str,
            count: i32,
            tags: &[(&str, &str)],
        ) -> Vec<String> {
            let ec2 = aws_sdk_ec2::Client::new(&for_region(customer, region));
            let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
            for (k, v) in tags {
                spec = spec.tags(Tag::builder().key(*k).value(*v).build());
            }
            let out = ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .instance_type(Ec2Type::M5Large)
                .min_count(count)
                .max_count(count)
                .tag_specifications(spec.build())
                .send()
                .await
                .unwrap();
            out.instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect()
        }

        fn request(tenant: &TenantId, run: &str) -> DiscoverAccount {
            DiscoverAccount {
                tenant_id: tenant.clone(),
                account_id: "111122223333".into(),
                run_id: run.into(),
                scheduled: None,
            }
        }

        #[tokio::test]
        async fn inventories_clusters_in_two_regions_indexes_instances_and_reruns_without_writes() {
            let c = linked_customer().await;
            create_cluster(&c.customer, "us-east-1", "prod", Some("spot-a")).await;
            create_cluster(&c.customer, "us-east-1", "staging", None).await;
            create_cluster(&c.customer, "eu-west-1", "analytics", None).await;
            let prod = launch(
                &c.customer,
                "us-east-1",
                2,
                &[
                    ("eks:cluster-name", "prod"),
                    ("kubernetes.io/cluster/prod", "owned"),
                    ("eks:nodegroup-name", "spot-a"),
                    ("karpenter.sh/capacity-type", "spot"),
                ],
            )
            .await;
            let staging = launch(
                &c.customer,
                "us-east-1",
                1,
                &[("kubernetes.io/cluster/staging", "owned")],
            )
            .await;
            launch(&c.customer, "us-east-1", 1, &[("Name", "not-a-node")]).await;

            let now = OffsetDateTime::now_utc();
            let first = discover_account(&c.deps, &request(&c.tenant, "r1"), now)
                .await
                .unwrap();
            assert!(first.errors.is_empty(), "{:?}", first.errors);
            assert_eq!((first.clusters, first.nodes), (3, 3));
            assert_eq!(first.new_clusters.len(), 3);
            // STS 1; per region: AZs 1, ListClusters 1; per cluster: DescribeCluster 1,
            // ListNodegroups 1, DescribeInstances 2; per node group: DescribeNodegroup 1.
            assert_eq!(first.api_calls, 1 + 2 * 2 + 3 * 4 + 1, "{first:?}");
            assert_eq!(
                first.writes,
                3 + 1 + 3 + 3,
                "three clusters, one node group, three nodes and where their instances run"
            );

            // The interruption handler's look-up: instance id -> tenant, cluster, node.
            let locate = |instance: &str| {
                let store = &c.deps.store;
                let key = keys::instance(instance);
                async move { store.get::<InstanceLocation>(&key).await.unwrap().unwrap() }
            };
            let location = locate(&prod[0]).await.body;
            let node = c
                .deps
                .store
                .get::<Node>(&keys::node(
                    &location.tenant_id,
                    &location.cluster_id,
                    &location.node_name,
                ))
                .await
                .unwrap()
                .unwrap()
                .body;
            let node = &node;
            assert_eq!(node.tenant_id, c.tenant);
            assert_eq!(node.cluster_id.as_str(), "111122223333.us-east-1.prod");
            assert_eq!(node.capacity_type, CapacityType::Spot);
            assert!(
                node.zone_id
                    .as_deref()
                    .is_some_and(|z| z.starts_with("use1-az")),
                "{:?}",
                node.zone_id
            );
            assert_eq!(
                node.labels.get("eks:nodegroup-name").map(String::as_str),
                Some("spot-a")
            );
            assert_eq!(
                locate(&staging[0]).await.body.cluster_id.as_str(),
                "111122223333.us-east-1.staging",
                "found by the kubernetes.io/cluster tag alone"
            );
            let group = c
                .deps
                .store
                .get::<Nodegroup>(&keys::nodegroup(&c.tenant, &node.cluster_id, "spot-a"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (group.body.capacity_type, group.body.desired_size),
                (CapacityType::Spot, 2)
            );

            let second = discover_account(&c.deps, &request(&c.tenant, "r2"), now)
                .await
                .unwrap();
            assert_eq!(
                (second.clusters, second.nodes, second.writes),
                (3, 3, 0),
                "an unchanged account writes nothing but its run record"
            );
            assert!(second.new_clusters.is_empty());

            // One node terminates and a cluster is deleted: marked, not deleted.
            let ec2 = aws_sdk_ec2::Client::new(&for_region(&c.customer, "us-east-1"));
            ec2.terminate_instances()
                .instance_ids(&prod[1])
                .send()
                .await
                .unwrap();
            aws_sdk_eks::Client::new(&for_region(&c.customer, "eu-west-1"))
                .delete_cluster()
                .name("analytics")
                .send()
                .await
                .unwrap();
            let third = discover_account(&c.deps, &request(&c.tenant, "r3"), now)
                .await
                .unwrap();
            assert_eq!(
                third.vanished_clusters,
                ["111122223333.eu-west-1.analytics"]
            );
            assert_eq!(third.writes, 3, "the node, its location and the cluster");
            let gone = locate(&prod[1]).await;
            assert!(gone.ttl.is_some(), "a departed instance's location expires");
            let departed = c
                .deps
                .store
                .get::<Node>(&keys::node(
                    &gone.body.tenant_id,
                    &gone.body.cluster_id,
                    &gone.body.node_name,
                ))
                .await
                .unwrap()
                .unwrap();
            assert!(departed.body.departed_at.is_some());
            let analytics = c
                .deps
                .store
                .get::<Cluster>(&keys::cluster(
                    &c.tenant,
                    &ClusterId::new("111122223333.eu-west-1.analytics").unwrap(),
                ))
                .await
                .unwrap()
                .unwrap();
            assert!(analytics.body.vanished_at.is_some());

            let run = c
                .deps
                .store
                .get::<AccountRun>(&keys::discovery_run(&c.tenant, "111122223333", "r3"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(run.body.vanished_clusters.len(), 1);
            let notes: Vec<Notification> =
                c.stack.drain(c.stack.resource("NotificationsQueue")).await;
            let titles: Vec<String> = notes.into_iter().map(|n| n.title).collect();
            assert_eq!(
                titles
                    .iter()
                    .filter(|t| *t == "EKS cluster discovered")
                    .count(),
                3
            );
            assert_eq!(
                titles
                    .iter()
                    .filter(|t| *t == "EKS cluster no longer found")
                    .count(),
                1
            );
        }

        /// STS answering AccessDenied, as it does when the trust policy or ExternalId is wrong.
        async fn denying_sts() -> (String, tokio::task::JoinHandle<()>) {
            let app = axum::Router::new().fallback(|| async {
                (
                    axum::http::StatusCode::FORBIDDEN,
                    [("content-type", "text/xml")],
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                     <Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole</Message>\
                     </Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>",
                )
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            (
                url,
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }),
            )
        }

        #[tokio::test]
        async fn an_account_whose_role_cannot_be_assumed_is_marked_unhealthy_once() {
            let mut c = linked_customer().await;
            let (sts, server) = denying_sts().await;
            let base = c
                .stack
                .sdk_config()
                .await
                .to_builder()
                .endpoint_url(sts)
                .build();
            c.deps.accounts = CrossAccount::new(base, "spotwise-discovery");

            let now = OffsetDateTime::now_utc();
            let run = discover_account(&c.deps, &request(&c.tenant, "r1"), now)
                .await
                .unwrap();
            assert!(!run.healthy);
            assert!(run.errors[0].contains("AccessDenied"), "{:?}", run.errors);
            let account = c
                .deps
                .store
                .get::<Account>(&keys::account(&c.tenant, "111122223333"))
                .await
                .unwrap()
                .unwrap();
            assert!(
                matches!(&account.body.health, AccountHealth::Unhealthy { reason } if reason.contains("AccessDenied"))
            );
            discover_account(&c.deps, &request(&c.tenant, "r2"), now)
                .await
                .unwrap();
            server.abort();

            let alerts: Vec<Notification> =
                c.stack.drain(c.stack.resource("NotificationsQueue")).await;
            assert_eq!(
                alerts.len(),
                1,
                "the tenant is told once, not every five minutes"
            );
            assert_eq!(alerts[0].severity, Severity::Critical);
        }

        #[tokio::test]
        async fn schedule_and_queue_events_reach_their_handlers() {
            let c = linked_customer().await;
            let schedule: DiscoveryEvent =
                serde_json::from_str(&spotwise_testkit::fixture("events/discovery/schedule.json"))
                    .unwrap();
            let DiscoveryResponse::FanOut(fan) = handle(&c.deps, schedule).await.unwrap() else {
                panic!("expected a fan-out")
            };
            assert_eq!(fan.enqueued, 1);
            let batch: DiscoveryEvent = serde_json::from_str(&spotwise_testkit::fixture(
                "events/discovery/sqs-discover-account.json",
            ))
            .unwrap();
            let DiscoveryResponse::Batch(response) = handle(&c.deps, batch).await.unwrap() else {
                panic!("expected a batch")
            };
            assert!(response.batch_item_failures.is_empty());
            let run = c
                .deps
                .store
                .get::<AccountRun>(&keys::discovery_run(
                    &c.tenant,
                    "111122223333",
                    "01JDISCOVERYRUNSAMPLE00001",
                ))
                .await
                .unwrap();
            assert!(run.is_some());
        }
    }
}
